"""Writing the output as Parquet, CSV or SQLite a table at a time: every row, nested values
as JSON text, SQLite column types from the Arrow schema, a header even when there are no
rows, and the digest of what was written."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.aggregate.finalize import open_sink
from shardflow.manifests import sha256_bytes

TABLE = pa.table(
    {
        "_key": ["b1:0", "b1:1"],
        "count": pa.array([3, None], pa.int64()),
        "ok": [True, False],
        "score": [0.5, 1.25],
        "blob": pa.array([b"\x00\x01", b""], pa.binary()),
        "tags": pa.array([["a", "b"], None], pa.list_(pa.string())),
        "geo": pa.array([{"lat": 1.5, "lon": 2.0}, {"lat": None, "lon": 0.0}]),
    }
)


def _publish(table: pa.Table, fmt: str, tmp_path: Path) -> bytes:
    """Write ``table`` in two halves; the sink's digest is the file's."""
    sink = open_sink(fmt, tmp_path / f"out.{fmt}", table.schema, "zstd", "results")
    half = table.num_rows // 2
    sink.write(table.slice(0, half))
    sink.write(table.slice(half))
    sha = sink.close()
    data = sink.path.read_bytes()
    assert sink.rows == table.num_rows
    assert sha == sha256_bytes(data)
    return data


def test_parquet_holds_every_row_of_every_table(tmp_path: Path) -> None:
    data = _publish(TABLE, "parquet", tmp_path)
    assert pq.read_table(io.BytesIO(data)).equals(TABLE)


def test_parquet_of_an_empty_result_has_the_schema(tmp_path: Path) -> None:
    data = _publish(TABLE.slice(0, 0), "parquet", tmp_path)
    assert pq.read_table(io.BytesIO(data)).schema == TABLE.schema


def test_csv_has_every_row_with_nested_values_as_json(tmp_path: Path) -> None:
    data = _publish(TABLE, "csv", tmp_path)
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert [r["_key"] for r in rows] == ["b1:0", "b1:1"]
    assert rows[0]["tags"] == '["a","b"]'
    assert rows[0]["geo"] == '{"lat":1.5,"lon":2.0}'
    assert rows[1]["tags"] == ""  # a null list stays empty, not "null"
    assert rows[0]["count"] == "3"


def test_csv_of_an_empty_result_still_has_its_header(tmp_path: Path) -> None:
    data = _publish(TABLE.slice(0, 0), "csv", tmp_path)
    assert data.decode().splitlines() == [",".join(TABLE.schema.names)]


def test_sqlite_table_is_named_after_the_output_with_typed_columns(tmp_path: Path) -> None:
    data = _publish(TABLE, "sqlite", tmp_path)
    db_path = tmp_path / "check.sqlite"
    db_path.write_bytes(data)
    db = sqlite3.connect(db_path)
    types = {row[1]: row[2] for row in db.execute('PRAGMA table_info("results")')}
    rows = db.execute('SELECT _key, count, ok, score, blob, tags FROM "results"').fetchall()
    db.close()
    assert types == {
        "_key": "TEXT",
        "count": "INTEGER",
        "ok": "INTEGER",
        "score": "REAL",
        "blob": "BLOB",
        "tags": "TEXT",
        "geo": "TEXT",
    }
    assert rows == [
        ("b1:0", 3, 1, 0.5, b"\x00\x01", '["a","b"]'),
        ("b1:1", None, 0, 1.25, b"", None),
    ]


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="output format 'xlsx'"):
        open_sink("xlsx", tmp_path / "out.xlsx", TABLE.schema, "zstd", "results")
