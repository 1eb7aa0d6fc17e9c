"""Writing the final dataset in the configured format, a table at a time.

A sink takes tables in task order and writes them as they come, with bounded memory:
Parquet in row groups of :data:`GROUP_ROWS` rows, CSV and SQLite a batch at a time (nested
columns become JSON text there). Every sink writes into a local file and hashes what it
writes, so the file is published without being read again.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import pyarrow as pa

GROUP_ROWS = 131_072
"""Rows per Parquet row group of the output (small inputs are gathered up to this)."""
COMPACT_TABLES = 512
"""Tables held for a row group after which they are combined into one."""


class HashingFile:
    """A write-only file that hashes what goes through it."""

    def __init__(self, path: Path) -> None:
        self._f: IO[bytes] = path.open("wb")
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += view.nbytes
        return self._f.write(view)

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self.closed = True


class OutputSink(Protocol):
    path: Path
    rows: int

    def write(self, table: pa.Table) -> None: ...

    def close(self) -> str:
        """Finish the file; return its SHA-256."""
        ...

    def abort(self) -> None:
        """Give the file up (it is removed)."""
        ...


class ParquetSink:
    """Row groups of :data:`GROUP_ROWS`. The writer is opened with the first row group:
    dictionary encoding is asked for only where that group's values repeat (building a
    dictionary for unique values, then dropping it, made a third of the encoding time)."""

    def __init__(
        self, path: Path, schema: pa.Schema, compression: str, group_rows: int = GROUP_ROWS
    ) -> None:
        self.path = path
        self.rows = 0
        self._group_rows = group_rows
        self._file = HashingFile(path)
        self._schema = schema
        self._codec = None if compression == "none" else compression
        self._writer: Any = None
        self._held: list[pa.Table] = []
        self._held_rows = 0

    def write(self, table: pa.Table) -> None:
        import pyarrow as pa

        if not table.num_rows:
            return
        self._held.append(table)
        self._held_rows += table.num_rows
        self.rows += table.num_rows
        if self._held_rows >= self._group_rows:
            self._flush()
        elif len(self._held) >= COMPACT_TABLES:
            # many small results (tiny tasks): one table of one chunk per column, so that a
            # row group is not tens of thousands of chunks
            self._held = [pa.concat_tables(self._held).combine_chunks()]

    def _flush(self) -> None:
        import pyarrow as pa

        if self._held or self._writer is None:
            table = pa.concat_tables(self._held) if self._held else self._schema.empty_table()
            if self._writer is None:
                self._writer = self._open(table)
            self._writer.write_table(table, row_group_size=max(self._group_rows, table.num_rows))
            self._held, self._held_rows = [], 0

    def _open(self, first: pa.Table) -> Any:
        import pyarrow.parquet as pq

        return pq.ParquetWriter(
            cast(Any, self._file),
            self._schema,
            compression=cast(Any, self._codec),
            use_dictionary=cast(Any, repeating_columns(first)),
        )

    def close(self) -> str:
        self._flush()
        self._writer.close()
        self._file.close()
        return self._file.sha.hexdigest()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def repeating_columns(table: pa.Table, share: float = 0.5) -> list[str]:
    """The columns whose distinct values are fewer than ``share`` of their rows."""
    import pyarrow.compute as pc

    rows = max(1, table.num_rows)
    names = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            distinct = pc.count_distinct(column).as_py()
        except Exception:  # a type count_distinct does not take (nested): let Parquet try
            distinct = 0
        if distinct < share * rows:
            names.append(name)
    return names


def _flat(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nested columns (lists, structs) become JSON text for CSV and SQLite."""
    import orjson
    import pyarrow as pa

    columns: list[Any] = []
    for col in batch.columns:
        if pa.types.is_nested(col.type):
            columns.append(
                pa.array(
                    [None if v is None else orjson.dumps(v).decode() for v in col.to_pylist()],
                    pa.string(),
                )
            )
        else:
            columns.append(col)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


class CsvSink:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.rows = 0
        self._file = HashingFile(path)
        self._names = schema.names
        self._writer: Any = None

    def write(self, table: pa.Table) -> None:
        import pyarrow.csv as pcsv

        for batch in table.to_batches():
            flat = _flat(batch)
            if self._writer is None:
                self._writer = pcsv.CSVWriter(cast(Any, self._file), flat.schema)
            self._writer.write_batch(flat)
            self.rows += batch.num_rows

    def close(self) -> str:
        if self._writer is not None:
            self._writer.close()
        else:
            self._file.write((",".join(self._names) + "\n").encode())
        self._file.close()
        return self._file.sha.hexdigest()

    def abort(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def _sqlite_type(t: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    if pa.types.is_binary(t):
        return "BLOB"
    return "TEXT"


class SqliteSink:
    def __init__(self, path: Path, schema: pa.Schema, table: str) -> None:
        self.path = path
        self.rows = 0
        path.unlink(missing_ok=True)
        self._db = sqlite3.connect(path)
        cols = ", ".join(f'"{f.name.replace(chr(34), "")}" {_sqlite_type(f.type)}' for f in schema)
        self._db.execute(f'CREATE TABLE "{table}" ({cols})')
        marks = ", ".join("?" for _ in schema)
        self._insert = f'INSERT INTO "{table}" VALUES ({marks})'

    def write(self, table: pa.Table) -> None:
        for batch in table.to_batches():
            data: list[Any] = list(_flat(batch).to_pydict().values())
            self._db.executemany(self._insert, zip(*data, strict=True))
            self.rows += batch.num_rows

    def abort(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> str:
        self._db.commit()
        self._db.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()


def open_sink(fmt: str, path: Path, schema: pa.Schema, compression: str, name: str) -> OutputSink:
    if fmt == "parquet":
        return ParquetSink(path, schema, compression)
    if fmt == "csv":
        return CsvSink(path, schema)
    if fmt == "sqlite":
        return SqliteSink(path, schema, name)
    raise ValueError(f"unknown output format {fmt!r}")
