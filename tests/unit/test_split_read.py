"""The worker's reader: resume, skips, keys, duplicates, and reading through any Source."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest

from shardflow.layout import Layout
from shardflow.objectstore.local import LocalObjectStore
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.split import formats, sources, text
from shardflow.split.dedup import KeyIndex
from shardflow.split.plan import split_input
from shardflow.split.read import batch_item_keys, iter_batch
from shardflow.split.spec import SplitResult, SplitSpec
from shardflow.testing.synthetic import write_jsonl

LAYOUT = Layout("job-1")


def _split(spec: SplitSpec, store: Any = None) -> tuple[SplitResult, Any]:
    store = store if store is not None else MemoryObjectStore()
    return split_input(spec, job_id="job-1", store=store, layout=LAYOUT, now=0.0), store


def test_start_after_resumes_after_the_last_done_ordinal(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"n": 0}\n\n{"n": 1}\nnot json\n{"n": 2}\n{"n": 3}\n')
    spec = SplitSpec(paths=(str(path),))
    result, store = _split(spec)
    (batch,) = result.batches
    every = list(iter_batch(batch, spec=spec, store=store))
    assert [(r.ordinal, r.line) for r in every] == [(0, 1), (1, 3), (2, 4), (3, 5), (4, 6)]
    assert every[2].error is not None
    assert every[2].raw == "not json"
    rest = list(iter_batch(batch, spec=spec, store=store, start_after=2))
    assert rest == every[3:]
    assert list(iter_batch(batch, spec=spec, store=store, start_after=4)) == []


def test_repeated_keys_keep_the_first_and_reject_the_rest(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_bytes(b"".join(orjson.dumps({"id": k}) + b"\n" for k in ["x", "y", "x", "z", 5]))
    b.write_bytes(gzip.compress(b'{"id": "5"}\n{"id": "y"}\n{"id": "w"}\n'))
    spec = SplitSpec(paths=(str(a), str(b)), id_field="id", batch_records=2)
    result, store = _split(spec)
    values = [
        (r.value or {})["id"]
        for bt in result.batches
        for r in iter_batch(bt, spec=spec, store=store)
    ]
    assert values == ["x", "y", "z", 5, "w"]
    assert [bt.skip for bt in result.batches] == [(), (0,), (), (0, 1), ()]
    assert (result.records, result.duplicates, result.rejected) == (5, 3, 3)
    assert result.duplicate_examples[0] == (f"'x' at {a.as_uri()}:3 (first seen at {a.as_uri()}:1)")
    entries = [orjson.loads(x) for x in store.get_bytes(result.reject_keys[1]).splitlines()]
    assert [(e["line"], e["reason"]) for e in entries] == [
        (1, f"duplicate key '5' (first seen at {a.as_uri()}:5)"),
        (2, f"duplicate key 'y' (first seen at {a.as_uri()}:2)"),
    ]
    assert entries[0]["source"] == b.as_uri()


def test_hash_collisions_never_reject_distinct_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "in.jsonl"
    stats = write_jsonl(path, 200, duplicate_every=50)
    monkeypatch.setattr(text, "hash", lambda key: 42, raising=False)  # every key collides
    spec = SplitSpec(paths=(str(path),), id_field="id", batch_records=64)
    result, _ = _split(spec)
    assert (result.duplicates, result.records) == (stats.duplicates, stats.unique)


def test_key_index_partitions_find_every_repeated_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    from shardflow.split import dedup

    monkeypatch.setattr(dedup, "CHUNK_RECORDS", 7)
    monkeypatch.setattr(dedup, "PARTITION_RECORDS", 5)
    index = KeyIndex()
    hashes = [hash(f"k{i % 37}") if i % 3 == 0 else hash(f"u{i}") for i in range(100)]
    index.extend(hashes)
    expected = [i for i, h in enumerate(hashes) if hashes.count(h) > 1]
    assert len(index) == 100
    assert list(index.candidate_ordinals()) == expected


def test_item_keys_use_the_id_field_or_the_ordinal(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n{"id": 3}\n')
    with_id = SplitSpec(paths=(str(path),), id_field="id")
    result, store = _split(with_id)
    (batch,) = result.batches
    assert list(batch_item_keys(batch, with_id, store)) == [(0, "a"), (1, "b"), (3, "3")]
    plain = SplitSpec(paths=(str(path),))
    result, store = _split(plain)
    assert [k for _, k in batch_item_keys(result.batches[0], plain, store)] == [
        f"{result.batches[0].batch_id}:{i}" for i in range(4)
    ]


@dataclass
class _CountingSource:
    """A remote-like source that records the size of every ranged read."""

    url: str
    data: bytes
    mtime: float = 0.0
    reads: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.data)

    def read_range(self, start: int, end: int) -> bytes:
        self.reads.append(end - start)
        return self.data[start:end]

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


def test_byte_ranges_are_read_in_blocks_through_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "in.jsonl"
    write_jsonl(local, 400)
    remote = _CountingSource("mem://bucket/in.jsonl", local.read_bytes())
    monkeypatch.setattr(sources, "_SCHEMES", {})
    sources.register_scheme("mem", lambda url: remote)
    monkeypatch.setattr(formats, "BLOCK_SIZE", 4096)
    spec = SplitSpec(paths=(remote.url,), batch_records=300)
    result, store = _split(spec)
    remote.reads.clear()
    got = [r.value for r in iter_batch(result.batches[0], spec=spec, store=store)]
    assert got == [orjson.loads(x) for x in local.read_bytes().splitlines()[:300]]
    assert remote.reads
    assert max(remote.reads) <= 4096


def test_written_batches_read_from_a_local_store_path(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.zst"
    write_jsonl(path, 120, compression="zstd", malformed_every=10)
    spec = SplitSpec(paths=(str(path),), batch_records=50, id_field="id")
    result, store = _split(spec, LocalObjectStore(tmp_path / "store"))
    assert store.local_path(result.batches[0].source) is not None
    lines = [r.line for b in result.batches for r in iter_batch(b, spec=spec, store=store)]
    assert lines == [i + 1 + i // 10 for i in range(120)]
