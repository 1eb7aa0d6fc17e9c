"""The S3 sweeper: what crashed writers leave behind in a bucket.

Two kinds of garbage, both only when older than the caller's threshold:

- multipart uploads that were never completed or aborted (a process died mid-upload):
  S3 keeps their parts, and bills them, until aborted;
- attempt objects (``jobs/{job}/results/[hh/]{task}/{attempt}.*``) of a task whose
  ``.done`` marker names other objects: the attempt lost the publish race or was
  superseded. A task without a marker keeps every attempt object: its attempt may
  still be running, and it is the next attempt's (or purge's) business.

A marker that cannot be read leaves its task's objects alone and is counted in the
report. Nothing outside ``jobs/*/results/`` is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from shardflow.errors import ShardflowError
from shardflow.objectstore.base import ObjectInfo

if TYPE_CHECKING:
    from shardflow.objectstore.s3 import S3ObjectStore

log = logging.getLogger(__name__)

_MARKER = ".done"


@dataclass(frozen=True, slots=True)
class SweepReport:
    aborted_uploads: int = 0
    deleted_objects: int = 0
    unreadable_markers: int = 0


def _result_parts(key: str) -> tuple[str, str] | None:
    """(job, task base key) of a key under ``jobs/{job}/results/``, else None."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != "jobs" or parts[2] != "results":
        return None
    if key.endswith(_MARKER) and len(parts) >= 4:
        return parts[1], key[: -len(_MARKER)]
    if len(parts) >= 5:
        return parts[1], key.rsplit("/", 1)[0]
    return None


def _by_job(objects: Iterator[ObjectInfo]) -> Iterator[list[ObjectInfo]]:
    """The result objects grouped by job (a listing is in key order, so jobs are runs)."""
    current: str | None = None
    group: list[ObjectInfo] = []
    for obj in objects:
        found = _result_parts(obj.key)
        if found is None:
            continue
        if found[0] != current and group:
            yield group
            group = []
        current = found[0]
        group.append(obj)
    if group:
        yield group


def _named_keys(store: S3ObjectStore, marker_key: str) -> set[str] | None:
    """The keys a marker names (``result_key``, ``failures_key``); None if unreadable."""
    try:
        doc = orjson.loads(store.get_bytes(marker_key))
    except (ShardflowError, orjson.JSONDecodeError) as exc:
        log.warning("sweep: cannot read marker %s: %s", store.uri(marker_key), exc)
        return None
    if not isinstance(doc, dict):
        return None
    return {str(doc[f]) for f in ("result_key", "failures_key") if doc.get(f)}


def sweep_store(store: S3ObjectStore, *, older_than_seconds: float, now: float) -> SweepReport:
    """Abort stale multipart uploads and delete stale orphaned attempt objects."""
    cutoff = now - older_than_seconds
    aborted = 0
    for full, upload_id, initiated in store.iter_uploads():
        if initiated < cutoff:
            store.abort_upload(full, upload_id)
            aborted += 1
    deleted = unreadable = 0
    for group in _by_job(store.list("jobs/")):
        markers = {obj.key[: -len(_MARKER)]: obj.key for obj in group if obj.key.endswith(_MARKER)}
        named: dict[str, set[str] | None] = {
            base: _named_keys(store, key) for base, key in markers.items()
        }
        unreadable += sum(1 for keys in named.values() if keys is None)
        doomed: list[str] = []
        for obj in group:
            if obj.key.endswith(_MARKER) or obj.modified >= cutoff:
                continue
            base = obj.key.rsplit("/", 1)[0]
            keep = named.get(base)
            if base in named and keep is not None and obj.key not in keep:
                doomed.append(store.root + obj.key)
        if doomed:
            deleted += store.delete_full_keys(doomed)
    return SweepReport(
        aborted_uploads=aborted, deleted_objects=deleted, unreadable_markers=unreadable
    )
