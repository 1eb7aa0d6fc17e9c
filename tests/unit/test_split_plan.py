"""split_input on JSONL: byte ranges, rejects, batching strategies, determinism, resumption."""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.errors import ConfigError
from shardflow.layout import Layout
from shardflow.objectstore.local import LocalObjectStore
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.split import formats
from shardflow.split.plan import plan_summary, split_input
from shardflow.split.read import iter_batch
from shardflow.split.spec import SplitResult, SplitSpec
from shardflow.testing.synthetic import write_jsonl

LAYOUT = Layout("job-1")


def _split(spec: SplitSpec, store: Any = None) -> tuple[SplitResult, Any]:
    store = store if store is not None else MemoryObjectStore()
    return split_input(spec, job_id="job-1", store=store, layout=LAYOUT, now=0.0), store


def _read(result: SplitResult, spec: SplitSpec, store: Any) -> list[tuple[int, int, Any, Any]]:
    """(source index, line, value, error) of every record of every batch, in order."""
    out = []
    for batch in result.batches:
        recs = list(iter_batch(batch, spec=spec, store=store))
        assert [r.ordinal for r in recs] == [
            o for o in range(batch.records) if o not in batch.skip
        ], batch.batch_id
        out.extend((batch.source_index, r.line, r.value, r.error) for r in recs)
    return out


def _rejects(store: Any, key: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in store.get_bytes(key).splitlines()]


MESSY = (
    b'{"a": 1}\r\n'  # 1 CRLF
    b"\n"  # 2 blank
    b'{"a": 2}\n'  # 3
    b"   \t\n"  # 4 whitespace only
    b'{"a": "\xc3\xa9"}\n'  # 5 UTF-8
    b'{"a": "\xff"}\n'  # 6 invalid UTF-8: rejected by the split
    b"[1, 2]\n"  # 7 not an object: the reader reports it
    b'{"a": 3'  # 8 bad JSON, and no final newline
)


def test_byte_ranges_cover_every_record_once_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "messy.jsonl"
    path.write_bytes(MESSY)
    spec = SplitSpec(paths=(str(path),), batch_records=2)
    result, store = _split(spec)
    assert [(b.first_line, b.records, b.first_ordinal) for b in result.batches] == [
        (1, 2, 0),
        (5, 2, 2),
        (8, 1, 4),
    ]
    assert all(not b.written and b.source == path.as_uri() for b in result.batches)
    assert [b.batch_id for b in result.batches] == ["b000000", "b000001", "b000002"]
    # ranges are in order, do not overlap, and start at a record's first byte
    for a, b in zip(result.batches, result.batches[1:], strict=False):
        assert a.end is not None
        assert a.end <= b.start
    assert MESSY[result.batches[1].start :].startswith(b'{"a": "\xc3')
    assert result.batches[-1].end == len(MESSY)
    got = _read(result, spec, store)
    assert [(line, value, error is not None) for _, line, value, error in got] == [
        (1, {"a": 1}, False),
        (3, {"a": 2}, False),
        (5, {"a": "é"}, False),
        (7, None, True),
        (8, None, True),
    ]
    assert result.records == 5
    assert result.rejected == 1
    (entry,) = _rejects(store, result.reject_keys[0])
    assert entry["line"] == 6
    assert entry["source"] == path.as_uri()
    assert "UTF-8" in entry["reason"]
    assert entry["text"] == '{"a": "\ufffd"}'


def test_with_an_id_field_bad_json_is_rejected_by_the_split(tmp_path: Path) -> None:
    path = tmp_path / "messy.jsonl"
    path.write_bytes(MESSY + b'\n{"id": null}\n{"id": 7}\n{"id": ""}\n{"id": 1.5}\n')
    spec = SplitSpec(paths=(str(path),), id_field="id", batch_records=3)
    result, store = _split(spec)
    got = _read(result, spec, store)
    assert [(line, value) for _, line, value, _ in got] == [(10, {"id": 7})]
    reasons = {e["line"]: e["reason"] for e in _rejects(store, result.reject_keys[0])}
    assert sorted(reasons) == [1, 3, 5, 6, 7, 8, 9, 11, 12]
    assert reasons[1] == "missing id field 'id'"
    assert reasons[7] == "JSON list is not an object"
    assert reasons[8].startswith("invalid JSON")
    assert reasons[11] == "empty id field 'id'"
    assert reasons[12] == "id field 'id' is float, not a string or an integer"
    assert (result.records, result.rejected) == (1, 9)


def _lines_strategy() -> st.SearchStrategy[list[bytes]]:
    good = st.integers(0, 10**6).map(lambda i: orjson.dumps({"i": i, "pad": "x" * (i % 40)}))
    other = st.sampled_from([b"", b"  ", b"{bad", b"\xff\xfe", b"[1]", b"x" * 90])
    return st.lists(st.one_of(good, good, good, other), max_size=60)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=_lines_strategy(),
    crlf=st.booleans(),
    final_newline=st.booleans(),
    block=st.sampled_from([16, 50, 4096]),
    batching=st.sampled_from([("records", 1), ("records", 4), ("bytes", 60), ("bytes", 500)]),
    compression=st.sampled_from(["none", "gzip"]),
)
def test_any_input_reads_back_as_the_same_records(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[bytes],
    crlf: bool,
    final_newline: bool,
    block: int,
    batching: tuple[str, int],
    compression: str,
) -> None:
    monkeypatch.setattr(formats, "BLOCK_SIZE", block)
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(lines) + (sep if final_newline and lines else b"")
    path = tmp_path / "in.jsonl"
    path.write_bytes(gzip.compress(data) if compression == "gzip" else data)
    spec = SplitSpec(
        paths=(str(path),),
        max_record_bytes=80,
        batch_records=batching[1] if batching[0] == "records" else None,
        batch_bytes=batching[1] if batching[0] == "bytes" else None,
    )
    result, store = _split(spec)
    expected = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if len(raw) > 80 or not raw.strip() or raw.startswith(b"\xff"):
            continue
        value = orjson.loads(raw) if raw.strip().startswith(b'{"i"') else None
        expected.append((n, value))
    assert [(line, value) for _, line, value, _ in _read(result, spec, store)] == expected
    assert result.records == len(expected)
    assert [b.first_ordinal for b in result.batches] == [
        sum(b.records for b in result.batches[:i]) for i in range(len(result.batches))
    ]
    if batching[0] == "records":
        assert all(b.records <= batching[1] for b in result.batches)


def test_bytes_batching_cuts_before_a_record_would_overflow(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"n": "x" * n}) + b"\n" for n in (1, 5, 35, 2, 2, 2)))
    spec = SplitSpec(paths=(str(path),), batch_records=None, batch_bytes=40)
    result, _ = _split(spec)
    sizes = [(b.records, (b.end or 0) - b.start) for b in result.batches]
    # a record bigger than the limit makes a batch by itself
    assert sizes == [(2, 24), (1, 44), (3, 33)]


def cut_before_vip(records: int, nbytes: int, line: bytes) -> bool:
    """A batching function for the test below: a batch per 'vip', at most 3 records."""
    return b'"vip"' in line or records >= 3


def test_a_custom_batching_function_decides_the_cuts(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    kinds = ["a", "vip", "b", "c", "d", "e", "vip", "f"]
    path.write_bytes(b"".join(orjson.dumps({"k": k}) + b"\n" for k in kinds))
    spec = SplitSpec(paths=(str(path),), batch_function="tests.unit.test_split_plan:cut_before_vip")
    result, _ = _split(spec)
    assert [b.records for b in result.batches] == [1, 3, 2, 2]
    with pytest.raises(ConfigError, match="cannot import"):
        _split(replace(spec, batch_function="no_such_module_x:fn"))


def test_gzip_named_jsonl_is_decompressed_into_written_batches(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jsonl"
    stats = write_jsonl(plain, 250, malformed_every=20)
    packed = tmp_path / "packed.jsonl"  # gzip bytes under a plain name
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    spec = SplitSpec(paths=(str(plain),), batch_records=100)
    ref, ref_store = _split(spec)
    spec_gz = replace(spec, paths=(str(packed),))
    result, store = _split(spec_gz)
    assert [b.source for b in result.batches] == [
        LAYOUT.batch(f"b00000{i}", "jsonl") for i in range(3)
    ]
    assert all(b.written for b in result.batches)
    first = store.get_bytes(result.batches[0].source)
    assert first.startswith(b'{"id":"u0000000"')
    assert b"\xff" not in first  # rejected lines are blanked in written batches
    assert _read(result, spec_gz, store) == _read(ref, spec, ref_store)
    assert result.rejected == ref.rejected == stats.malformed_split
    assert result.inputs[0].sha256 is not None


def test_zstd_input_reads_like_plain(tmp_path: Path) -> None:
    plain = tmp_path / "p.jsonl"
    write_jsonl(plain, 120, malformed_every=7)
    zst = tmp_path / "p.jsonl.zst"
    zst.write_bytes(zstandard.compress(plain.read_bytes()))
    spec = SplitSpec(paths=(str(plain),), batch_records=50, id_field="id")
    ref, ref_store = _split(spec)
    result, store = _split(replace(spec, paths=(str(zst),)))
    assert _read(result, spec, store) == _read(ref, spec, ref_store)


def test_over_long_lines_are_rejected_and_later_lines_keep_their_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formats, "BLOCK_SIZE", 64)
    path = tmp_path / "in.jsonl"
    long = b'{"x": "' + b"y" * 500 + b'"}'
    path.write_bytes(b'{"n": 1}\n' + long + b'\n{"n": 2}\n' + long[:90] + b'"}\n{"n": 3}\n')
    spec = SplitSpec(paths=(str(path),), max_record_bytes=80, batch_records=10)
    result, store = _split(spec)
    got = [(line, value) for _, line, value, _ in _read(result, spec, store)]
    assert got == [(1, {"n": 1}), (3, {"n": 2}), (5, {"n": 3})]
    entries = _rejects(store, result.reject_keys[0])
    assert [(e["line"], e["reason"]) for e in entries] == [
        (2, "record is 509 bytes, over max_record_bytes 80"),
        (4, "record is 92 bytes, over max_record_bytes 80"),
    ]
    assert len(entries[0]["text"]) == 200


def test_inputs_keep_their_order_and_batches_never_span_two(tmp_path: Path) -> None:
    for name, n in (("b.jsonl", 5), ("a.jsonl", 3)):
        write_jsonl(tmp_path / name, n)
    spec = SplitSpec(paths=(str(tmp_path / "*.jsonl"),), batch_records=4)
    result, _ = _split(spec)
    assert [(b.source_index, b.records, b.first_ordinal) for b in result.batches] == [
        (0, 3, 0),
        (1, 4, 3),
        (1, 1, 7),
    ]
    assert [Path(i.url).name for i in result.inputs] == ["a.jsonl", "b.jsonl"]


def test_splitting_twice_gives_equal_results_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    write_jsonl(path, 300, malformed_every=11, duplicate_every=13, compression="gzip")
    spec = SplitSpec(paths=(str(path),), batch_records=64, id_field="id")
    one, store_one = _split(spec, LocalObjectStore(tmp_path / "s1"))
    two, store_two = _split(spec, LocalObjectStore(tmp_path / "s2"))
    assert one == two
    keys = [o.key for o in store_one.list("jobs/")]
    assert keys == [o.key for o in store_two.list("jobs/")]
    assert all(store_one.get_bytes(k) == store_two.get_bytes(k) for k in keys)


class _Crash(Exception):
    pass


def test_a_split_killed_midway_gives_the_same_result_when_run_again(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    write_jsonl(path, 400, malformed_every=9, duplicate_every=17, compression="gzip")
    spec = SplitSpec(paths=(str(path),), batch_records=50, id_field="id")
    clean, clean_store = _split(spec)
    for crash_at in (1, 4, 9):  # mid batches, after the batches, at the rejects
        store = MemoryObjectStore()
        real_put = store.put_file
        store.put_file = _failing_put(real_put, crash_at)  # type: ignore[method-assign]
        with pytest.raises(_Crash):
            _split(spec, store)
        store.put_file = real_put  # type: ignore[method-assign]
        again, _ = _split(spec, store)
        assert again == clean
        keys = store.keys()
        assert keys == clean_store.keys()
        assert all(store.get_bytes(k) == clean_store.get_bytes(k) for k in keys)


def _failing_put(real_put: Any, crash_at: int) -> Any:
    """A put_file that raises on its ``crash_at``-th call, as if the split were killed."""
    calls = 0

    def put(key: str, src: Path, *, create_only: bool = False) -> Any:
        nonlocal calls
        calls += 1
        if calls == crash_at:
            raise _Crash(key)
        return real_put(key, src, create_only=create_only)

    return put


def test_dry_run_summary_counts_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    stats = write_jsonl(path, 500, malformed_every=10, compression="gzip")
    summary = plan_summary(SplitSpec(paths=(str(path),), batch_records=100))
    assert summary["batches"] == 6  # 500 records and 33 bad-JSON lines the reader reports
    assert summary["records"] == stats.records + stats.malformed_json
    assert summary["rejected"] == stats.malformed_split
    assert summary["inputs"][0]["compression"] == "gzip"


def test_an_empty_input_makes_no_batches(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    result, _ = _split(SplitSpec(paths=(str(path),)))
    assert (result.batches, result.records, result.reject_keys) == ((), 0, ())
