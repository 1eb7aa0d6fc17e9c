"""split_input on CSV (quoted newlines, headers, column counts) and Parquet (row ranges)."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.errors import ConfigError, InputError
from shardflow.layout import Layout
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.split import formats, sources
from shardflow.split.plan import split_input
from shardflow.split.read import iter_batch
from shardflow.split.spec import SplitResult, SplitSpec
from shardflow.testing.synthetic import write_csv

LAYOUT = Layout("job-1")


def _split(spec: SplitSpec) -> tuple[SplitResult, MemoryObjectStore]:
    store = MemoryObjectStore()
    return split_input(spec, job_id="job-1", store=store, layout=LAYOUT, now=0.0), store


def _records(result: SplitResult, spec: SplitSpec, store: Any) -> list[tuple[int, Any]]:
    return [
        (r.line, r.value) for b in result.batches for r in iter_batch(b, spec=spec, store=store)
    ]


def _rejects(store: Any, key: str) -> list[tuple[int, str]]:
    return [(e["line"], e["reason"]) for e in map(orjson.loads, store.get_bytes(key).splitlines())]


CSV = (
    b"id,name,note\r\n"  # 1
    b'1,Ada,"multi\r\nline, with ""quotes"""\r\n'  # 2-3
    b"2,Alan,plain\r\n"  # 4
    b"\r\n"  # 5 blank
    b"3,Grace\r\n"  # 6 too few columns
    b'4,"Lin\nus","a\nb\nc"\r\n'  # 7-10
    b"5,Ken,\xff\r\n"  # 11 not UTF-8
    b"6,Barbara,last"  # 12, no final newline
)


def test_quoted_newlines_stay_inside_their_record(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(CSV)
    spec = SplitSpec(paths=(str(path),), batch_records=2)
    result, store = _split(spec)
    assert [(b.first_line, b.records) for b in result.batches] == [(2, 2), (7, 2)]
    assert {b.header for b in result.batches} == {"id,name,note"}
    assert _records(result, spec, store) == [
        (2, {"id": "1", "name": "Ada", "note": 'multi\r\nline, with "quotes"'}),
        (4, {"id": "2", "name": "Alan", "note": "plain"}),
        (7, {"id": "4", "name": "Lin\nus", "note": "a\nb\nc"}),
        (12, {"id": "6", "name": "Barbara", "note": "last"}),
    ]
    assert _rejects(store, result.reject_keys[0]) == [
        (6, "expected 3 columns, got 2"),
        (11, "cannot decode as utf-8 at byte 6"),
    ]


@pytest.mark.parametrize("block", [8, 33, 4096])
def test_gzip_csv_is_rewritten_with_its_header_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    monkeypatch.setattr(formats, "BLOCK_SIZE", block)
    plain, packed = tmp_path / "p.csv", tmp_path / "p.csv.gz"
    plain.write_bytes(CSV)
    packed.write_bytes(gzip.compress(CSV))
    spec = SplitSpec(paths=(str(plain),), batch_records=2)
    ref, ref_store = _split(spec)
    result, store = _split(replace(spec, paths=(str(packed),)))
    assert all(b.written and b.source.endswith(".csv") for b in result.batches)
    assert store.get_bytes(result.batches[0].source).startswith(b"id,name,note\n1,Ada,")
    assert _records(result, spec, store) == _records(ref, spec, ref_store)
    assert _rejects(store, result.reject_keys[0]) == _rejects(ref_store, ref.reject_keys[0])


def test_headerless_csv_gets_numbered_columns(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_bytes(b"a\t1\nb\t2\nc\n")
    spec = SplitSpec(paths=(str(path),), csv_header=False, csv_delimiter="\t")
    result, store = _split(spec)
    assert _records(result, spec, store) == [
        (1, {"column_1": "a", "column_2": "1"}),
        (2, {"column_1": "b", "column_2": "2"}),
    ]
    assert result.rejected == 1


def test_csv_keys_come_from_the_id_column(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    stats = write_csv(path, 300, malformed_every=25, duplicate_every=20)
    spec = SplitSpec(paths=(str(path),), id_field="id", batch_records=64)
    result, store = _split(spec)
    ids = [v["id"] for _, v in _records(result, spec, store)]
    assert len(ids) == len(set(ids)) == stats.unique == result.records
    assert result.duplicates == stats.duplicates
    assert result.rejected == stats.malformed + stats.duplicates
    with pytest.raises(InputError, match="id field 'nope' is not a column"):
        _split(replace(spec, id_field="nope"))


def test_an_unterminated_quote_cannot_swallow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes(b'a,b\n1,"open\n' + b"2,x\n" * 30)
    spec = SplitSpec(paths=(str(path),), max_record_bytes=40)
    result, store = _split(spec)
    (line, reason), *_ = _rejects(store, result.reject_keys[0])
    assert line == 2
    assert "over max_record_bytes 40" in reason
    assert 20 < result.records < 30


def _parquet(path: Path, n: int, *, row_group: int, ids: list[Any] | None = None) -> None:
    table = pa.table(
        {"id": ids if ids is not None else [f"k{i}" for i in range(n)], "n": list(range(n))}
    )
    pq.write_table(table, path, row_group_size=row_group)


def test_parquet_batches_are_row_ranges(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _parquet(path, 50, row_group=16)
    spec = SplitSpec(paths=(str(path),), batch_records=20)
    result, store = _split(spec)
    assert [(b.start, b.end, b.first_line, b.written) for b in result.batches] == [
        (0, 20, 1, False),
        (20, 40, 21, False),
        (40, 50, 41, False),
    ]
    got = _records(result, spec, store)
    assert got == [(i + 1, {"id": f"k{i}", "n": i}) for i in range(50)]
    recs = list(iter_batch(result.batches[1], spec=spec, store=store, start_after=17))
    assert [(r.ordinal, r.line) for r in recs] == [(18, 39), (19, 40)]


def test_parquet_ids_are_checked_and_deduplicated(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _parquet(path, 8, row_group=3, ids=["a", "b", None, "a", "c", "", "b", "d"])
    spec = SplitSpec(paths=(str(path),), id_field="id", batch_records=3)
    result, store = _split(spec)
    assert [v["id"] for _, v in _records(result, spec, store)] == ["a", "b", "c", "d"]
    assert _rejects(store, result.reject_keys[0]) == [
        (3, "missing id field 'id'"),
        (4, f"duplicate key 'a' (first seen at {path.as_uri()}:1)"),
        (6, "empty id field 'id'"),
        (7, f"duplicate key 'b' (first seen at {path.as_uri()}:2)"),
    ]
    assert (result.records, result.duplicates) == (4, 2)


def test_parquet_bytes_batching_uses_the_footer_sizes(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _parquet(path, 1000, row_group=100)
    per_row = pq.ParquetFile(path).metadata.row_group(0).total_byte_size // 100
    spec = SplitSpec(paths=(str(path),), batch_records=None, batch_bytes=per_row * 250)
    result, _ = _split(spec)
    assert sum(b.records for b in result.batches) == 1000
    assert 3 <= len(result.batches) <= 5


def test_parquet_cannot_use_a_batching_function(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _parquet(path, 3, row_group=3)
    spec = SplitSpec(paths=(str(path),), batch_function="tests.unit.test_split_plan:cut_before_vip")
    with pytest.raises(ConfigError, match="Parquet"):
        _split(spec)


def test_a_file_that_is_not_parquet_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="as Parquet"):
        _split(SplitSpec(paths=(str(path),)))


def test_csv_needs_an_ascii_compatible_encoding(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes("a,b\n1,2\n".encode("utf-16"))
    with pytest.raises(InputError, match="not supported for CSV"):
        _split(SplitSpec(paths=(str(path),), encoding="utf-16"))
    latin = tmp_path / "l.csv"
    latin.write_bytes("name\nJosé\n".encode("latin-1"))
    spec = SplitSpec(paths=(str(latin),), encoding="latin-1")
    result, store = _split(spec)
    assert _records(result, spec, store) == [(2, {"name": "José"})]


@dataclass(frozen=True)
class _RemoteSource:
    url: str
    data: bytes
    mtime: float = 0.0

    @property
    def size(self) -> int:
        return len(self.data)

    def read_range(self, start: int, end: int) -> bytes:
        return self.data[start:end]

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


def test_parquet_is_read_by_ranges_from_a_remote_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "t.parquet"
    _parquet(local, 30, row_group=8)
    remote = _RemoteSource("mem://bucket/t.parquet", local.read_bytes())
    monkeypatch.setattr(sources, "_SCHEMES", {})
    sources.register_scheme("mem", lambda url: remote)
    spec = SplitSpec(paths=(remote.url,), batch_records=12, id_field="id")
    result, store = _split(spec)
    assert [(b.start, b.end) for b in result.batches] == [(0, 12), (12, 24), (24, 30)]
    assert [v["n"] for _, v in _records(result, spec, store)] == list(range(30))


def test_quotes_open_a_field_only_at_its_start(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b'a,b\n1,2\nx"y,3\n4,"five""\n"\n6,"7"z\n8,"nine"\n')
    spec = SplitSpec(paths=(str(path),), batch_records=2)
    result, store = _split(spec)
    assert _records(result, spec, store) == [
        (2, {"a": "1", "b": "2"}),
        (3, {"a": 'x"y', "b": "3"}),
        (4, {"a": "4", "b": 'five"\n'}),
        (6, {"a": "6", "b": "7z"}),
        (7, {"a": "8", "b": "nine"}),
    ]
    assert result.rejected == 0


_FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n\r é')), max_size=8)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(_FIELD, _FIELD), max_size=30),
    block=st.sampled_from([8, 50, 4096]),
    batch=st.sampled_from([("records", 1), ("records", 3), ("bytes", 20), ("bytes", 200)]),
    gz=st.booleans(),
)
def test_any_csv_written_by_the_csv_module_reads_back_row_for_row(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[tuple[str, str]],
    block: int,
    batch: tuple[str, int],
    gz: bool,
) -> None:
    monkeypatch.setattr(formats, "BLOCK_SIZE", block)
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["x", "y"])
    writer.writerows(rows)
    data = text.getvalue().encode()
    path = tmp_path / "r.csv"
    path.write_bytes(gzip.compress(data) if gz else data)
    by_records = batch[0] == "records"
    spec = SplitSpec(
        paths=(str(path),),
        batch_records=batch[1] if by_records else None,
        batch_bytes=None if by_records else batch[1],
    )
    result, store = _split(spec)
    expected = [{"x": a, "y": b} for a, b in rows]
    assert [v for _, v in _records(result, spec, store)] == expected
    assert result.rejected == 0
