"""An attempt's result and failure objects: Arrow IPC files, built in memory.

Task results are intermediate (docs/design.md, object layout): the worker writes them as
Arrow IPC files, which cost a fraction of a Parquet encode to write and next to nothing to
read back for the merge (uncompressed on a local store; lz4 where bytes travel). Only
``output/`` is in the format the user configured. :func:`decode_table` reads either format
(results of jobs written by an earlier shardflow are Parquet).
"""

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

#: the extension of intermediate objects (results, failures, aggregation nodes)
RESULT_FORMAT = "arrow"


def failure_schema() -> pa.Schema:
    import pyarrow as pa

    from shardflow.aggregate.merge import arrow_type

    return pa.schema([(name, arrow_type(t)) for name, t in FAILURE_COLUMNS])


def result_table(
    parts: Sequence[Path], rows: list[dict[str, Any]], keys: list[str], key_column: str
) -> pa.Table:
    """Checkpoint parts, then the ``rows`` (and their item ``keys``) still in memory, as
    one table with the key column first. A task with no output rows has a table with
    only the key column, so every committed task names a readable result."""
    import pyarrow as pa

    from shardflow.worker.checkpoint import read_parts, rows_table

    tail = rows_table(rows, keys, key_column) if rows else None
    table = read_parts(parts, tail) if parts else tail  # the common case: no parts saved
    if table is None:
        return pa.table({key_column: pa.array([], pa.string())})
    if table.column_names[0] != key_column:
        table = table.select([key_column, *(n for n in table.column_names if n != key_column)])
    return table


def ipc_bytes(table: pa.Table, codec: str | None = "lz4") -> bytes:
    """``table`` as an Arrow IPC file, its buffers compressed with ``codec`` (lz4, zstd
    or None)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=cast(Any, codec))
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def failures_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist(list(records), schema=failure_schema())


def read_options() -> pa.ipc.IpcReadOptions:
    """Reading small IPC files: no thread pool (its hand-offs cost more than they save)."""
    import pyarrow as pa

    return pa.ipc.IpcReadOptions(use_threads=False)


def decode_table(data: bytes) -> pa.Table:
    """A result, failures or output table from its bytes: Arrow IPC or Parquet (told
    apart by the file's magic)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.py_buffer(data)
    if data[:6] == b"ARROW1":
        return pa.ipc.open_file(buffer, options=read_options()).read_all()
    return pq.read_table(pa.BufferReader(buffer))
