"""Manifests: what encode writes decodes to the same value, and anything else is refused
with a ManifestError that names the manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardflow.errors import ManifestError
from shardflow.manifests import (
    HashingWriter,
    InputChecksum,
    JobManifest,
    OutputFile,
    OutputManifest,
    ResultMarker,
    RetryManifest,
    SplitPlan,
    TaskManifest,
    decode_manifest,
    encode_manifest,
    sha256_bytes,
    sha256_file,
)
from shardflow.models import SCHEMA_VERSION, Batch, ErrorClass

SHA = "a" * 64
INPUTS = (
    InputChecksum("file:///data/users.jsonl.gz", 1234, 1_700_000_000.5, SHA),
    InputChecksum("s3://bucket/users-2.jsonl", 99, 1_700_000_001.0, None),
)
BATCH = Batch(
    batch_id="b-000001",
    source="file:///data/users.jsonl.gz",
    format="jsonl",
    records=10_000,
    first_line=1,
    first_ordinal=0,
    start=0,
    end=None,
    skip=(3, 17),
    header=None,
)
RESULT = ResultMarker(
    job_id="enrich-users-1",
    task_id="t-000001",
    attempt=2,
    owner="host-1:4242",
    created_at=1_700_000_100.25,
    result_key="jobs/enrich-users-1/results/t-000001/0002.parquet",
    result_sha256=SHA,
    result_size=4096,
    rows=9_990,
    failures_key=None,
    failures_sha256=None,
    failures_size=0,
    items_total=10_000,
    items_succeeded=9_990,
    items_failed=8,
    items_rejected=2,
    columns=("id", "name", "geo"),
)

EXAMPLES: list[Any] = [
    JobManifest(
        job_id="enrich-users-1",
        name="enrich users ✓",
        created_at=1_700_000_000.0,
        config={"name": "enrich", "batching": {"records": 10_000}, "tags": ["a", None, 1.5]},
        inputs=INPUTS,
    ),
    TaskManifest("enrich-users-1", 0, (BATCH, BATCH)),
    RESULT,
    RetryManifest("enrich-users-1", "t-000001", 1, ErrorClass.TRANSIENT, "HTTP 503", 1.7e9, 1.7e9),
    OutputManifest(
        job_id="enrich-users-1",
        created_at=1_700_000_200.0,
        format="parquet",
        files=(OutputFile("jobs/enrich-users-1/output/part-0.parquet", SHA, 100, 9_990),),
        rows=9_990,
        failures=8,
        rejects=2,
        items_total=10_000,
        schema=(("id", "string"), ("geo", "struct<lat: double, lon: double>")),
    ),
    SplitPlan("enrich-users-1", 1_700_000_000.0, 1, 1, 10_000, 1, 2, INPUTS),
]


def resign(doc: dict[str, Any]) -> bytes:
    """Re-encode ``doc`` with a valid checksum, as a tamperer who knows the scheme would."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    checksum = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return orjson.dumps({**body, "checksum": checksum})


def encoded_doc(manifest: object) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(encode_manifest(manifest))
    return doc


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda m: type(m).__name__)
def test_encode_then_decode_round_trips(manifest: object) -> None:
    data = encode_manifest(manifest)
    doc = orjson.loads(data)
    assert doc["kind"] == type(manifest).KIND  # type: ignore[attr-defined]
    assert doc["schema_version"] == SCHEMA_VERSION
    assert (
        doc["checksum"]
        == hashlib.sha256(
            orjson.dumps(
                {k: v for k, v in doc.items() if k != "checksum"}, option=orjson.OPT_SORT_KEYS
            )
        ).hexdigest()
    )
    assert decode_manifest(data, type(manifest), name="m.json") == manifest


@given(
    attempt=st.integers(0, 10_000),
    rows=st.integers(0, 2**53),
    created_at=st.floats(0, 4e9, allow_nan=False),
    owner=st.text(max_size=40),
    columns=st.lists(st.text(max_size=10), max_size=5).map(tuple),
    failures_key=st.none() | st.text(min_size=1, max_size=30),
)
def test_result_marker_round_trips_any_values(
    attempt: int,
    rows: int,
    created_at: float,
    owner: str,
    columns: tuple[str, ...],
    failures_key: str | None,
) -> None:
    marker = dataclasses.replace(
        RESULT,
        attempt=attempt,
        rows=rows,
        created_at=created_at,
        owner=owner,
        columns=columns,
        failures_key=failures_key,
    )
    assert decode_manifest(encode_manifest(marker), ResultMarker, name="t.done") == marker


def test_checksum_covers_content_not_formatting() -> None:
    doc = encoded_doc(RESULT)
    reformatted = json.dumps(doc, indent=None, separators=(",", ":"), sort_keys=False)
    assert decode_manifest(reformatted.encode(), ResultMarker, name="t.done") == RESULT
    doc["rows"] = doc["rows"] + 1
    with pytest.raises(ManifestError, match=r"t\.done: checksum mismatch"):
        decode_manifest(orjson.dumps(doc), ResultMarker, name="t.done")


def test_missing_checksum_is_refused() -> None:
    doc = encoded_doc(RESULT)
    del doc["checksum"]
    with pytest.raises(ManifestError, match="checksum"):
        decode_manifest(orjson.dumps(doc), ResultMarker, name="t.done")


@pytest.mark.parametrize("data", [b"", b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_bad_json_is_refused_naming_the_manifest(data: bytes) -> None:
    with pytest.raises(ManifestError, match=r"jobs/j/results/t\.done"):
        decode_manifest(data, ResultMarker, name="jobs/j/results/t.done")


def test_other_kind_is_refused() -> None:
    with pytest.raises(ManifestError, match="'task' manifest, expected 'result'"):
        decode_manifest(encode_manifest(EXAMPLES[1]), ResultMarker, name="t.done")


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1", True, None])
def test_other_schema_version_is_refused(version: object) -> None:
    doc = encoded_doc(RESULT)
    doc["schema_version"] = version
    with pytest.raises(ManifestError, match="schema_version"):
        decode_manifest(resign(doc), ResultMarker, name="t.done")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown fields"),
        ({"rows": "9990"}, "rows: expected int"),
        ({"rows": True}, "rows: expected int"),
        ({"rows": 1.5}, "rows: expected int"),
        ({"attempt": None}, "attempt: expected int"),
        ({"columns": "id"}, "columns: expected a list"),
        ({"columns": ["id", 3]}, r"columns\[1\]: expected str"),
        ({"task_id": "../../etc"}, "invalid"),
        ({"job_id": "UPPER"}, "invalid"),
    ],
)
def test_fields_of_wrong_shape_are_refused(change: dict[str, Any], message: str) -> None:
    doc = {**encoded_doc(RESULT), **change}
    with pytest.raises(ManifestError, match=message):
        decode_manifest(resign(doc), ResultMarker, name="t.done")


def test_missing_field_is_refused() -> None:
    doc = encoded_doc(RESULT)
    del doc["items_failed"]
    with pytest.raises(ManifestError, match=r"missing fields \['items_failed'\]"):
        decode_manifest(resign(doc), ResultMarker, name="t.done")


def test_nested_batch_and_enum_are_checked() -> None:
    doc = encoded_doc(EXAMPLES[1])
    doc["batches"][1]["batch_id"] = "../b"
    with pytest.raises(ManifestError, match="batch_id"):
        decode_manifest(resign(doc), TaskManifest, name="task.json")
    retry = encoded_doc(EXAMPLES[3])
    retry["error_class"] = "catastrophic"
    with pytest.raises(ManifestError, match="error_class"):
        decode_manifest(resign(retry), RetryManifest, name="retry.json")


def test_schema_pairs_must_have_two_items() -> None:
    doc = encoded_doc(EXAMPLES[4])
    doc["schema"] = [["id", "string", "extra"]]
    with pytest.raises(ManifestError, match="schema"):
        decode_manifest(resign(doc), OutputManifest, name="_MANIFEST.json")


def test_integer_timestamps_decode_as_floats() -> None:
    doc = {**encoded_doc(RESULT), "created_at": 1_700_000_000}
    marker = decode_manifest(resign(doc), ResultMarker, name="t.done")
    assert isinstance(marker.created_at, float)


def test_encode_refuses_what_decode_would_refuse() -> None:
    with pytest.raises(ManifestError, match="job_id"):
        encode_manifest(TaskManifest("Bad Id", 0, (BATCH,)))
    with pytest.raises(ManifestError, match="finite"):
        encode_manifest(SplitPlan("job-1", float("nan"), 1, 1, 1, 0, 0, INPUTS))
    with pytest.raises(ManifestError):
        encode_manifest(
            JobManifest("job-1", "n", 0.0, {"path": Path("/x")}, ())  # not JSON
        )
    with pytest.raises(TypeError):
        encode_manifest(BATCH)


def test_sha256_file_matches_bytes_across_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000  # 2.5 MiB: more than one read chunk
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == sha256_bytes(data) == hashlib.sha256(data).hexdigest()


def test_hashing_writer_checksums_a_parquet_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"u{i}" for i in range(5_000)], "n": list(range(5_000))})
    path = tmp_path / "0001.parquet"
    with HashingWriter.open(path) as sink:
        pq.write_table(table, pa.PythonFile(sink, mode="w"))
        sink.fsync()
    assert sink.closed
    assert sink.size == path.stat().st_size
    assert sink.sha256 == sha256_file(path)
    assert pq.read_table(path).equals(table)


def test_hashing_writer_accepts_memoryviews(tmp_path: Path) -> None:
    with HashingWriter.open(tmp_path / "f") as sink:
        assert sink.write(memoryview(b"abc")) == 3
        sink.write(bytearray(b"def"))
        assert sink.tell() == 6
    assert (tmp_path / "f").read_bytes() == b"abcdef"
    assert sink.sha256 == sha256_bytes(b"abcdef")
    with pytest.raises(FileExistsError):
        HashingWriter.open(tmp_path / "f")
