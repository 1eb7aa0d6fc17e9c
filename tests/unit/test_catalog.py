"""Task manifest parts: sizes that depend only on a batch's position, and the catalog a
worker reads its batch from."""

from __future__ import annotations

import pytest

from shardflow.catalog import (
    FIRST_PART,
    PART_BATCHES,
    TaskCatalog,
    batch_index,
    part_of,
    part_size,
    part_start,
    task_id_for,
)
from shardflow.errors import ManifestError, NotFoundError
from shardflow.layout import Layout
from shardflow.manifests import TaskManifest, encode_manifest
from shardflow.models import Batch
from shardflow.objectstore.memory import MemoryObjectStore


def test_parts_grow_from_two_to_1024_batches_then_stay() -> None:
    sizes = [part_size(p) for p in range(13)]
    assert sizes == [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1024, 1024, 1024]
    assert (FIRST_PART, PART_BATCHES) == (2, 1024)
    assert part_start(0) == 0
    assert part_start(11) == sum(sizes[:11])


def test_every_batch_is_in_exactly_the_part_that_starts_before_it() -> None:
    for index in range(30_000):
        part = part_of(index)
        assert part_start(part) <= index < part_start(part + 1), index


def test_task_and_batch_ids_map_to_each_other() -> None:
    assert task_id_for("b000123") == "t000123"
    assert batch_index("t000123") == batch_index("b000123") == 123
    with pytest.raises(ManifestError):
        batch_index("tx")


def test_the_catalog_reads_a_part_once_and_keeps_a_few() -> None:
    store = MemoryObjectStore()
    layout = Layout("job-1")
    reads: list[str] = []
    get = store.get_bytes

    def counting(key: str, **kw: object) -> bytes:
        reads.append(key)
        return get(key)

    store.get_bytes = counting  # type: ignore[method-assign]
    for part in range(4):
        start = part_start(part)
        batches = tuple(
            Batch(f"b{i:06d}", "file:///in.jsonl", "jsonl", 1, i + 1, i)
            for i in range(start, start + part_size(part))
        )
        store.put_bytes(
            layout.task_part(part), encode_manifest(TaskManifest("job-1", part, batches))
        )
    catalog = TaskCatalog(store, layout, keep=2)
    assert catalog.batch("t000000").first_line == 1
    assert catalog.batch("t000001").first_line == 2  # the same part: no read
    assert catalog.batch("t000007").batch_id == "b000007"  # part 2
    assert len(reads) == 2
    assert catalog.batch("t000013").batch_id == "b000013"  # part 2 again
    catalog.batch("t000003")  # part 1
    catalog.batch("t000000")  # part 0 was dropped (keep=2): read again
    assert len(reads) == 4
    with pytest.raises(NotFoundError):
        catalog.batch("t000030")  # part 4 was never written
