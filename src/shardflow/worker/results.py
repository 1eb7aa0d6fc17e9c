"""Writing an attempt's result and failure files (Parquet) from its checkpoint and the
rows still in memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import pyarrow as pa

FAILURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("key", "string"),
    ("kind", "string"),
    ("error_class", "string"),
    ("exception", "string"),
    ("message", "string"),
    ("traceback", "string"),
    ("attempt", "int64"),
    ("task_id", "string"),
    ("source", "string"),
    ("line", "int64"),
)


def failure_schema() -> pa.Schema:
    import pyarrow as pa

    from shardflow.aggregate.merge import arrow_type

    return pa.schema([(name, arrow_type(t)) for name, t in FAILURE_COLUMNS])


def write_results(
    parts: Sequence[Path],
    dest: Path,
    key_column: str,
    *,
    compression: str = "zstd",
    tail: tuple[list[dict[str, Any]], list[str]] = ([], []),
) -> list[str]:
    """Concatenate checkpoint parts, then the ``tail`` rows (and their keys) still in
    memory, into one Parquet file, key column first.

    Returns the column names. A task with no output rows writes an empty file with
    only the key column, so every committed task names a readable result.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shardflow.worker.checkpoint import read_parts, rows_table

    rows, keys = tail
    table = read_parts(parts, *([rows_table(rows, keys, key_column)] if rows else []))
    if table is None:
        table = pa.table({key_column: pa.array([], pa.string())})
    else:
        names = [key_column] + [n for n in table.column_names if n != key_column]
        table = table.select(names)
    pq.write_table(table, dest, compression=cast(Any, compression))
    return list(table.column_names)


def write_failures(records: Sequence[dict[str, Any]], dest: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(records), schema=failure_schema())
    pq.write_table(table, dest, compression="zstd")
