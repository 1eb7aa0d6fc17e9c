"""What ``shardflow recover`` sweeps: result objects of attempts that lost to the attempt
a task's marker names, and temp files of writes that died; nothing of a task that is
still running, and nothing the marker names."""

from __future__ import annotations

import os
from pathlib import Path

from shardflow.coordinator.sweep import sweep_job
from shardflow.layout import Layout
from shardflow.manifests import ResultMarker, encode_manifest
from shardflow.models import Job, Task
from shardflow.objectstore.base import ObjectStore
from shardflow.objectstore.local import TMP_DIR, LocalObjectStore
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.statestore.base import commit_task, lease_task
from shardflow.statestore.memory import MemoryStateStore

JOB = "job-1"
LAYOUT = Layout(JOB)


def _state(task_ids: list[str]) -> MemoryStateStore:
    state = MemoryStateStore()
    state.create_job(Job(job_id=JOB, name="sweep"))
    state.register_tasks([Task(job_id=JOB, task_id=t, batch_id=f"b{t}") for t in task_ids])
    return state


def _succeed(state: MemoryStateStore, store: ObjectStore, task_id: str, attempt: int) -> None:
    task = lease_task(state, JOB, task_id, owner="w1", ttl=30, now=10.0)
    assert task is not None
    commit_task(
        state,
        task,
        now=20.0,
        result_attempt=attempt,
        items_total=1,
        items_succeeded=1,
        items_failed=0,
        items_rejected=0,
        rows=1,
    )
    marker = ResultMarker(
        job_id=JOB,
        task_id=task_id,
        attempt=attempt,
        owner="w1",
        created_at=20.0,
        result_key=LAYOUT.result(task_id, attempt),
        result_sha256="0" * 64,
        result_size=1,
        rows=1,
        failures_key=LAYOUT.failures(task_id, attempt),
        failures_sha256="0" * 64,
        failures_size=1,
        items_total=1,
        items_succeeded=1,
        items_failed=0,
        items_rejected=0,
        columns=("_key",),
    )
    store.put_bytes(LAYOUT.marker(task_id), encode_manifest(marker))


def _attempt_objects(store: ObjectStore, task_id: str, attempt: int) -> None:
    store.put_bytes(LAYOUT.result(task_id, attempt), b"r")
    store.put_bytes(LAYOUT.failures(task_id, attempt), b"f")


def test_the_losing_attempts_of_a_finished_task_are_deleted() -> None:
    store = MemoryObjectStore()
    state = _state(["t000001", "t000002"])
    for attempt in (1, 2, 3):
        _attempt_objects(store, "t000001", attempt)
    _succeed(state, store, "t000001", attempt=2)
    # t000002 is still running: its attempt objects may be being written
    _attempt_objects(store, "t000002", 1)

    swept = sweep_job(store, state, JOB, now=1000.0)

    assert swept == {"orphaned_attempts": 4, "temp_files": 0}
    assert sorted(info.key for info in store.list(LAYOUT.results_prefix())) == sorted(
        [
            LAYOUT.marker("t000001"),
            LAYOUT.result("t000001", 2),
            LAYOUT.failures("t000001", 2),
            LAYOUT.result("t000002", 1),
            LAYOUT.failures("t000002", 1),
        ]
    )
    # sweeping again finds nothing more
    assert sweep_job(store, state, JOB, now=1000.0)["orphaned_attempts"] == 0


def test_a_succeeded_task_without_its_marker_keeps_its_objects() -> None:
    store = MemoryObjectStore()
    state = _state(["t000001"])
    _attempt_objects(store, "t000001", 1)
    _succeed(state, store, "t000001", attempt=1)
    store.delete(LAYOUT.marker("t000001"))
    _attempt_objects(store, "t000001", 2)
    assert sweep_job(store, state, JOB, now=1000.0)["orphaned_attempts"] == 0
    assert store.head(LAYOUT.result("t000001", 2)) is not None


def test_more_than_a_page_of_finished_tasks_is_swept() -> None:
    store = MemoryObjectStore()
    ids = [f"t{i:06d}" for i in range(1, 1003)]
    state = _state(ids)
    for task_id in ids:
        _succeed(state, store, task_id, attempt=2)
    store.put_bytes(LAYOUT.result(ids[-1], 1), b"stale")
    assert sweep_job(store, state, JOB, now=1000.0)["orphaned_attempts"] == 1


def test_temp_files_older_than_the_cutoff_are_removed_from_a_local_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    state = _state([])
    tmp = tmp_path / "store" / TMP_DIR
    tmp.mkdir(parents=True, exist_ok=True)
    old, fresh = tmp / "put-old", tmp / "put-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (100.0, 100.0))
    os.utime(fresh, (5000.0, 5000.0))

    swept = sweep_job(store, state, JOB, now=5000.0, older_than=3600)

    assert swept == {"orphaned_attempts": 0, "temp_files": 1}
    assert not old.exists()
    assert fresh.exists()
