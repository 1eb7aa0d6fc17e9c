"""Which batch each task reads: the job's task manifests, written in parts.

The split hands out batches as it makes them; the coordinator publishes each run of them
as one task manifest (``tasks/part-NNNNNN.json``), registers their tasks in one write and
dispatches them, so slots start on the first tasks while the split goes on. Part sizes
depend only on the batch's position (2, 4, 8, … 1024 batches, then 1024 each), so a split
killed midway and run again makes the same parts, byte for byte.

A worker reads the part that holds its task once and keeps it (:class:`TaskCatalog`): one
read serves up to 1024 tasks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from shardflow.errors import ManifestError
from shardflow.layout import Layout, validate_id
from shardflow.manifests import TaskManifest, decode_manifest
from shardflow.models import Batch
from shardflow.objectstore.base import ObjectStore

FIRST_PART = 2
"""Batches in the first part (each next part doubles, up to :data:`PART_BATCHES`)."""
PART_BATCHES = 1024
_GROWING = (PART_BATCHES // FIRST_PART).bit_length()  # parts 0..9 grow: 2, 4, …, 1024
_GROWN_FROM = FIRST_PART * ((1 << _GROWING) - 1)  # the first batch index of part 10


def task_id_for(batch_id: str) -> str:
    """The task of a batch: ``b000123`` → ``t000123``."""
    return validate_id("t" + batch_id.removeprefix("b"), "task id")


def batch_index(batch_or_task_id: str) -> int:
    """The position of a batch (or of its task) in the split: ``t000123`` → 123."""
    digits = batch_or_task_id[1:]
    if not digits.isdigit():
        raise ManifestError(f"{batch_or_task_id!r} is not a task or batch id of a split")
    return int(digits)


def part_start(part: int) -> int:
    """The index of the first batch of ``part``."""
    if part < _GROWING:
        return FIRST_PART * ((1 << part) - 1)
    return _GROWN_FROM + (part - _GROWING) * PART_BATCHES


def part_of(index: int) -> int:
    """The part holding the batch at ``index``."""
    if index >= _GROWN_FROM:
        return _GROWING + (index - _GROWN_FROM) // PART_BATCHES
    return (index // FIRST_PART + 1).bit_length() - 1


def part_size(part: int) -> int:
    return part_start(part + 1) - part_start(part)


def read_part(store: ObjectStore, layout: Layout, part: int) -> TaskManifest:
    key = layout.task_part(part)
    return decode_manifest(store.get_bytes(key), TaskManifest, name=key)


def iter_parts(store: ObjectStore, layout: Layout, parts: int) -> Iterator[TaskManifest]:
    for part in range(parts):
        yield read_part(store, layout, part)


class TaskCatalog:
    """The batch of any task of one job, read part by part and kept (a few parts)."""

    def __init__(self, store: ObjectStore, layout: Layout, *, keep: int = 4) -> None:
        self._store = store
        self._layout = layout
        self._keep = keep
        self._parts: OrderedDict[int, dict[str, Batch]] = OrderedDict()
        self._lock = threading.Lock()

    def batch(self, task_id: str) -> Batch:
        """The batch ``task_id`` reads; :class:`ManifestError` if its part does not name it."""
        part = part_of(batch_index(task_id))
        with self._lock:
            batches = self._parts.get(part)
            if batches is not None:
                self._parts.move_to_end(part)
        if batches is None:
            manifest = read_part(self._store, self._layout, part)
            batches = {task_id_for(b.batch_id): b for b in manifest.batches}
            with self._lock:
                self._parts[part] = batches
                while len(self._parts) > self._keep:
                    self._parts.popitem(last=False)
        batch = batches.get(task_id)
        if batch is None:
            raise ManifestError(f"task manifest part {part} does not name task {task_id}")
        return batch
