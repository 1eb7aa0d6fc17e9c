"""Sweeping what crashed attempts leave behind: orphaned attempt objects and temp files.

An attempt object is orphaned when its task is SUCCEEDED and the task's ``.done``
marker names another attempt (a stale worker lost the race, or a crash came between
its upload and its adoption). Objects of tasks that are not final are left alone: an
attempt may still be writing them.
"""

from __future__ import annotations

from shardflow.layout import Layout
from shardflow.manifests import ResultMarker, decode_manifest
from shardflow.models import TaskStatus
from shardflow.objectstore.base import ObjectStore
from shardflow.statestore.base import StateStore


def sweep_job(
    store: ObjectStore, state: StateStore, job_id: str, *, now: float, older_than: float = 3600
) -> dict[str, int]:
    layout = Layout(job_id)
    named: set[str] = set()
    done_tasks: set[str] = set()
    after: str | None = None
    while True:
        page = state.list_tasks(job_id, TaskStatus.SUCCEEDED, limit=1000, after=after)
        for task in page:
            key = layout.marker(task.task_id)
            if store.head(key) is None:
                continue
            marker = decode_manifest(store.get_bytes(key), ResultMarker, name=key)
            named.add(marker.result_key)
            if marker.failures_key:
                named.add(marker.failures_key)
            done_tasks.add(task.task_id)
        if len(page) < 1000:
            break
        after = page[-1].task_id
    orphans = 0
    for info in store.list(layout.results_prefix()):
        if info.key.endswith(".done") or info.key in named:
            continue
        task_id = info.key.rsplit("/", 2)[-2]
        if task_id in done_tasks:
            store.delete(info.key)
            orphans += 1
    temp = 0
    from shardflow.objectstore.local import LocalObjectStore

    if isinstance(store, LocalObjectStore):
        temp = store.sweep_temp(older_than, now)
    return {"orphaned_attempts": orphans, "temp_files": temp}
