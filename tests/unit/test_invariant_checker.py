"""The invariant checker shipped in shardflow.testing: it accepts a well-formed output in
each format and names the invariant a broken one violates."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from shardflow.layout import Layout
from shardflow.manifests import OutputFile, OutputManifest, encode_manifest, sha256_bytes
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.testing.invariants import (
    InvariantViolation,
    JobOutput,
    check_invariants,
    read_job_output,
)

JOB = "job-1"
LAYOUT = Layout(JOB)


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _encode(table: pa.Table, fmt: str, tmp_path: Path) -> bytes:
    if fmt == "parquet":
        return _parquet(table)
    if fmt == "csv":
        sink = io.BytesIO()
        pcsv.write_csv(table, sink)
        return sink.getvalue()
    path = tmp_path / "results.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE results (_key TEXT, n INTEGER)")
    db.executemany(
        "INSERT INTO results VALUES (?, ?)", zip(*table.to_pydict().values(), strict=True)
    )
    db.commit()
    db.close()
    return path.read_bytes()


RESULTS = pa.table({"_key": ["b1:0", "b1:1", "b1:3"], "n": [0, 1, 3]})
FAILURES = pa.table({"key": ["b1:2"], "message": ["bad"]})
REJECTS = pa.table({"line": [5], "message": ["malformed JSON"]})


def _publish(
    store: MemoryObjectStore, fmt: str, tmp_path: Path, *, rows_claimed: int | None = None
) -> None:
    objects = {
        LAYOUT.output("results", fmt): (_encode(RESULTS, fmt, tmp_path), RESULTS.num_rows),
        LAYOUT.output("failures", "parquet"): (_parquet(FAILURES), FAILURES.num_rows),
        LAYOUT.output("rejects", "parquet"): (_parquet(REJECTS), REJECTS.num_rows),
    }
    files = []
    for key, (data, rows) in objects.items():
        store.put_bytes(key, data)
        files.append(OutputFile(key, sha256_bytes(data), len(data), rows))
    if rows_claimed is not None:
        files[0] = OutputFile(files[0].key, files[0].sha256, files[0].size, rows_claimed)
    manifest = OutputManifest(
        job_id=JOB,
        created_at=1.0,
        format=fmt,
        files=tuple(files),
        rows=3,
        failures=1,
        rejects=1,
        items_total=4,
        schema=(("_key", "string"), ("n", "int64")),
    )
    store.put_bytes(LAYOUT.output_manifest(), encode_manifest(manifest))
    store.put_bytes(LAYOUT.output_success(), b"")


@pytest.mark.parametrize("fmt", ["parquet", "csv", "sqlite"])
def test_a_well_formed_output_passes_in_every_format(tmp_path: Path, fmt: str) -> None:
    store = MemoryObjectStore()
    _publish(store, fmt, tmp_path)
    out = read_job_output(store, JOB)
    assert out.manifest.format == fmt
    assert out.result_keys() == ["b1:0", "b1:1", "b1:3"]
    assert out.failure_keys() == ["b1:2"]
    check_invariants(
        out,
        input_records=5,
        expected_rejects=1,
        expected_keys={"b1:0", "b1:1", "b1:2", "b1:3"},
    )


def test_an_output_without_success_marker_is_not_published(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    _publish(store, "parquet", tmp_path)
    store.delete(LAYOUT.output_success())
    with pytest.raises(InvariantViolation, match=r"I4: .*_SUCCESS is missing"):
        read_job_output(store, JOB)


def test_an_object_the_manifest_does_not_name_is_reported(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    _publish(store, "parquet", tmp_path)
    store.put_bytes(LAYOUT.output_prefix() + "stray.parquet", b"x")
    with pytest.raises(InvariantViolation, match=r"unexpected objects .*stray\.parquet"):
        read_job_output(store, JOB)


def test_a_file_changed_after_publication_fails_its_checksum(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    _publish(store, "parquet", tmp_path)
    store.corrupt(LAYOUT.output("failures", "parquet"), _parquet(FAILURES.slice(0, 0)))
    with pytest.raises(InvariantViolation, match=r"failures\.parquet does not match"):
        read_job_output(store, JOB)


def test_a_row_count_other_than_the_manifest_says_is_reported(tmp_path: Path) -> None:
    store = MemoryObjectStore()
    _publish(store, "parquet", tmp_path, rows_claimed=4)
    with pytest.raises(InvariantViolation, match="has 3 rows, manifest says 4"):
        read_job_output(store, JOB)


def _output(keys: list[str], failed: list[str], reject_lines: list[int | None]) -> JobOutput:
    return JobOutput(
        manifest=None,  # type: ignore[arg-type]  # check_invariants reads only the tables
        results=pa.table({"_key": keys}),
        failures=pa.table({"key": pa.array(failed, pa.string())}),
        rejects=pa.table({"line": pa.array(reject_lines, pa.int64())}),
        key_column="_key",
    )


@pytest.mark.parametrize(
    ("out", "kwargs", "message"),
    [
        (_output(["a", "a"], [], []), {"input_records": 2}, "I2: keys appear twice.*'a'"),
        (_output(["a"], ["a"], []), {"input_records": 2}, "I1: items both in output"),
        (_output([], ["a", "a"], []), {"input_records": 2}, "I1: an item has two failure"),
        (_output(["a"], ["b"], [3]), {"input_records": 4}, r"I3: 1 rows \+ 1 failures"),
        (
            _output(["a"], [], [3]),
            {"input_records": 2, "expected_rejects": 2},
            "I3: 1 rejects, expected 2",
        ),
        (_output(["a"], [], [None]), {"input_records": 2}, "no line number"),
        (
            _output(["a"], ["b"], []),
            {"input_records": 2, "expected_keys": {"a", "b", "c"}},
            r"I1: items with neither a row nor a failure: \['c'\]",
        ),
    ],
)
def test_each_broken_invariant_is_named(
    out: JobOutput, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvariantViolation, match=message):
        check_invariants(out, **kwargs)  # type: ignore[arg-type]
