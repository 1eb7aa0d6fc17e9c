"""Publishing the merged result in the configured format: Parquet, CSV or SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardflow.aggregate.merge import Input, fetch
from shardflow.layout import Layout
from shardflow.manifests import OutputFile
from shardflow.objectstore.base import ObjectStore

if TYPE_CHECKING:
    import pyarrow as pa

    from shardflow.aggregate.run import AggregateSpec


def convert_output(
    store: ObjectStore, layout: Layout, root: Input, spec: AggregateSpec, scratch: Path
) -> OutputFile:
    """Write ``output/{name}.{format}`` from the tree's root; return what was published."""
    import pyarrow.parquet as pq

    key = layout.output(spec.output_name, spec.output_format)
    if spec.output_format == "parquet":
        put = store.copy(root.key, key)
        rows = pq.ParquetFile(
            fetch(store, Input(put.key, None), scratch, "out.parquet")
        ).metadata.num_rows
        return OutputFile(key=put.key, sha256=put.sha256, size=put.size, rows=rows)
    path = fetch(store, root, scratch, "root.parquet")
    dest = scratch / f"output.{spec.output_format}"
    if spec.output_format == "csv":
        rows = _to_csv(path, dest)
    elif spec.output_format == "sqlite":
        rows = _to_sqlite(path, dest, spec.output_name)
    else:
        raise ValueError(f"unknown output format {spec.output_format!r}")
    put = store.put_file(key, dest)
    return OutputFile(key=put.key, sha256=put.sha256, size=put.size, rows=rows)


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


def _to_csv(src: Path, dest: Path) -> int:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows = 0
    pf = pq.ParquetFile(src)
    writer = None
    try:
        for batch in pf.iter_batches(batch_size=65536):
            flat = _flat(batch)
            if writer is None:
                writer = pcsv.CSVWriter(str(dest), flat.schema)
            writer.write_batch(flat)
            rows += batch.num_rows
        if writer is None:
            dest.write_text(",".join(pf.schema_arrow.names) + "\n", encoding="utf-8")
    finally:
        if writer is not None:
            writer.close()
    return rows


def _sqlite_type(t: pa.DataType) -> str:
    import pyarrow as pa

    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    if pa.types.is_binary(t):
        return "BLOB"
    return "TEXT"


def _to_sqlite(src: Path, dest: Path, table: str) -> int:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    schema = pf.schema_arrow
    dest.unlink(missing_ok=True)
    db = sqlite3.connect(dest)
    cols = ", ".join(f'"{f.name.replace(chr(34), "")}" {_sqlite_type(f.type)}' for f in schema)
    db.execute(f'CREATE TABLE "{table}" ({cols})')
    marks = ", ".join("?" for _ in schema)
    rows = 0
    for batch in pf.iter_batches(batch_size=65536):
        flat = _flat(batch)
        data: list[Any] = flat.to_pydict().values()  # type: ignore[assignment]
        db.executemany(f'INSERT INTO "{table}" VALUES ({marks})', zip(*data, strict=True))
        rows += batch.num_rows
    db.commit()
    db.close()
    return rows
