"""The task-lifecycle functions of statestore/base.py, over the in-memory store, with the
clock passed in as ``now``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shardflow.errors import ConflictError, IllegalTransitionError, NotFoundError
from shardflow.models import ErrorClass, Job, JobStatus, Task, TaskStatus
from shardflow.statestore.base import (
    StateStore,
    commit_task,
    expire_lease,
    fail_task,
    leasable,
    lease_task,
    release_task,
    renew_lease,
    retry_later,
    status_counter,
    task_counts,
    transition_task,
    update_job,
)
from shardflow.statestore.memory import MemoryStateStore

JOB = "job-1"
TASK = "t000001"


@pytest.fixture
def store() -> MemoryStateStore:
    store = MemoryStateStore()
    store.create_job(Job(job_id=JOB, name="unit"))
    store.register_tasks([Task(job_id=JOB, task_id=TASK, batch_id="b000001")])
    return store


def _leased(store: StateStore, *, now: float = 100.0, ttl: float = 30.0) -> Task:
    task = lease_task(store, JOB, TASK, owner="w1", ttl=ttl, now=now)
    assert task is not None
    return task


def _counts(store: StateStore) -> dict[TaskStatus, int]:
    return {s: n for s, n in task_counts(store.read_counters(JOB)).items() if n}


def test_memory_store_is_a_state_store() -> None:
    assert isinstance(MemoryStateStore(), StateStore)
    assert MemoryStateStore().url == "memory://"


def test_status_counters_are_named_by_status() -> None:
    assert status_counter(TaskStatus.RETRY_WAIT) == "tasks.RETRY_WAIT"
    counts = task_counts({"tasks.PENDING": 3, "tasks.LEASED": 1, "rows": 9})
    assert counts[TaskStatus.PENDING] == 3
    assert counts[TaskStatus.SUCCEEDED] == 0
    assert set(counts) == set(TaskStatus)


@pytest.mark.parametrize(
    ("changes", "now", "expected"),
    [
        ({"status": TaskStatus.PENDING}, 0.0, True),
        ({"status": TaskStatus.RETRY_WAIT, "not_before": None}, 0.0, True),
        ({"status": TaskStatus.RETRY_WAIT, "not_before": 10.0}, 9.9, False),
        ({"status": TaskStatus.RETRY_WAIT, "not_before": 10.0}, 10.0, True),
        ({"status": TaskStatus.LEASED, "lease_expires_at": 10.0}, 9.9, False),
        ({"status": TaskStatus.LEASED, "lease_expires_at": 10.0}, 10.0, True),
        ({"status": TaskStatus.LEASED, "lease_expires_at": None}, 1e12, False),
        ({"status": TaskStatus.SUCCEEDED}, 0.0, False),
        ({"status": TaskStatus.FAILED}, 0.0, False),
        ({"status": TaskStatus.CANCELLED}, 0.0, False),
    ],
)
def test_leasable(changes: dict[str, Any], now: float, expected: bool) -> None:
    task = dataclasses.replace(Task(job_id=JOB, task_id=TASK, batch_id="b"), **changes)
    assert leasable(task, now) is expected


def test_transition_moves_the_status_counters(store: MemoryStateStore) -> None:
    task = store.get_task(JOB, TASK)
    assert task is not None
    leased = transition_task(store, task, TaskStatus.LEASED, now=5.0, counters={"attempts": 1})
    assert (leased.version, leased.updated_at) == (1, 5.0)
    assert store.read_counters(JOB) == {"tasks.LEASED": 1, "attempts": 1}
    # a heartbeat stays LEASED: the counters do not move
    transition_task(store, leased, TaskStatus.LEASED, now=6.0)
    assert store.read_counters(JOB) == {"tasks.LEASED": 1, "attempts": 1}


def test_illegal_transition_raises_before_writing(store: MemoryStateStore) -> None:
    task = store.get_task(JOB, TASK)
    assert task is not None
    with pytest.raises(IllegalTransitionError):
        transition_task(store, task, TaskStatus.SUCCEEDED, now=1.0)
    assert store.get_task(JOB, TASK) == task
    assert _counts(store) == {TaskStatus.PENDING: 1}


def test_lease_starts_an_attempt(store: MemoryStateStore) -> None:
    task = _leased(store, now=100.0, ttl=30.0)
    assert task.status is TaskStatus.LEASED
    assert (task.attempt, task.lease_owner, task.lease_expires_at) == (1, "w1", 130.0)
    assert (task.started_at, task.updated_at, task.version) == (100.0, 100.0, 1)
    assert store.get_task(JOB, TASK) == task
    assert store.read_counters(JOB) == {"tasks.LEASED": 1, "attempts": 1}


def test_lease_is_refused_while_held(store: MemoryStateStore) -> None:
    task = _leased(store, now=100.0, ttl=30.0)
    assert lease_task(store, JOB, TASK, owner="w2", ttl=30, now=129.9) is None
    assert store.get_task(JOB, TASK) == task


def test_expired_lease_is_taken_over(store: MemoryStateStore) -> None:
    _leased(store, now=100.0, ttl=30.0)
    taken = lease_task(store, JOB, TASK, owner="w2", ttl=30, now=130.0)
    assert taken is not None
    assert (taken.attempt, taken.lease_owner, taken.lease_expires_at) == (2, "w2", 160.0)
    assert taken.started_at == 100.0  # the task started with its first attempt
    assert store.read_counters(JOB) == {"tasks.LEASED": 1, "attempts": 2}


class _StaleReads(MemoryStateStore):
    """A store whose reads of the task return the copy from before another worker won."""

    stale: Task | None = None

    def get_task(self, job_id: str, task_id: str) -> Task | None:
        return self.stale if self.stale is not None else super().get_task(job_id, task_id)


def test_lease_that_loses_the_version_race_returns_none() -> None:
    store = _StaleReads()
    store.register_tasks([Task(job_id=JOB, task_id=TASK, batch_id="b000001")])
    store.stale = store.get_task(JOB, TASK)
    winner = lease_task(store, JOB, TASK, owner="w1", ttl=30, now=0.0)
    assert winner is not None
    assert lease_task(store, JOB, TASK, owner="w2", ttl=30, now=0.0) is None
    store.stale = None
    assert store.get_task(JOB, TASK) == winner
    assert store.read_counters(JOB) == {"tasks.LEASED": 1, "attempts": 1}


def test_lease_of_a_missing_task_raises(store: MemoryStateStore) -> None:
    with pytest.raises(NotFoundError):
        lease_task(store, JOB, "t999999", owner="w1", ttl=30, now=0.0)


def test_renew_extends_the_lease_and_fences_stale_copies(store: MemoryStateStore) -> None:
    task = _leased(store, now=100.0, ttl=30.0)
    renewed = renew_lease(store, task, ttl=30.0, now=120.0)
    assert (renewed.lease_expires_at, renewed.version) == (150.0, task.version + 1)
    with pytest.raises(ConflictError):
        renew_lease(store, task, ttl=30.0, now=121.0)
    assert store.get_task(JOB, TASK) == renewed


def test_renew_of_a_task_not_leased_raises_conflict(store: MemoryStateStore) -> None:
    task = store.get_task(JOB, TASK)
    assert task is not None
    with pytest.raises(ConflictError, match="not LEASED"):
        renew_lease(store, task, ttl=30.0, now=0.0)


def test_release_gives_the_task_back(store: MemoryStateStore) -> None:
    task = _leased(store)
    released = release_task(store, task, now=110.0, reason="preempted")
    assert released.status is TaskStatus.PENDING
    assert (released.lease_owner, released.lease_expires_at) == (None, None)
    assert (released.attempt, released.error_message) == (1, "preempted")
    assert _counts(store) == {TaskStatus.PENDING: 1}
    again = _leased(store, now=111.0)
    assert again.attempt == 2


def test_expire_lease_records_why(store: MemoryStateStore) -> None:
    task = _leased(store)
    expired = expire_lease(store, task, now=200.0)
    assert (expired.status, expired.error_message) == (TaskStatus.PENDING, "lease expired")


def test_commit_records_the_result_and_counts(store: MemoryStateStore) -> None:
    task = _leased(store, now=100.0)
    done = commit_task(
        store,
        task,
        now=150.0,
        result_attempt=1,
        items_total=10,
        items_succeeded=8,
        items_failed=2,
        items_rejected=1,
        rows=8,
    )
    assert done.status is TaskStatus.SUCCEEDED
    assert (done.result_attempt, done.rows, done.items_total) == (1, 8, 10)
    assert (done.items_succeeded, done.items_failed, done.finished_at) == (8, 2, 150.0)
    assert (done.lease_owner, done.lease_expires_at, done.error_message) == (None, None, None)
    assert store.read_counters(JOB) == {
        "tasks.SUCCEEDED": 1,
        "attempts": 1,
        "items.succeeded": 8,
        "items.failed": 2,
        "items.rejected": 1,
        "rows": 8,
    }


def test_commit_after_losing_the_lease_is_refused(store: MemoryStateStore) -> None:
    old = _leased(store, now=100.0, ttl=30.0)
    assert lease_task(store, JOB, TASK, owner="w2", ttl=30, now=140.0) is not None
    with pytest.raises(ConflictError):
        commit_task(
            store,
            old,
            now=141.0,
            result_attempt=1,
            items_total=1,
            items_succeeded=1,
            items_failed=0,
            items_rejected=0,
            rows=1,
        )
    assert store.read_counters(JOB) == {"tasks.LEASED": 1, "attempts": 2}


def test_commit_of_an_unleased_task_is_a_bug(store: MemoryStateStore) -> None:
    task = store.get_task(JOB, TASK)
    assert task is not None
    with pytest.raises(IllegalTransitionError):
        commit_task(
            store,
            task,
            now=1.0,
            result_attempt=0,
            items_total=0,
            items_succeeded=0,
            items_failed=0,
            items_rejected=0,
            rows=0,
        )


def test_retry_later_sets_not_before_and_keeps_the_error(store: MemoryStateStore) -> None:
    task = _leased(store, now=100.0)
    waiting = retry_later(
        store, task, now=110.0, delay=20.0, error_class=ErrorClass.TRANSIENT, message="x" * 5000
    )
    assert (waiting.status, waiting.not_before) == (TaskStatus.RETRY_WAIT, 130.0)
    assert waiting.error_class is ErrorClass.TRANSIENT
    assert waiting.error_message == "x" * 2000
    assert waiting.lease_owner is None
    assert _counts(store) == {TaskStatus.RETRY_WAIT: 1}
    assert lease_task(store, JOB, TASK, owner="w2", ttl=30, now=129.0) is None
    assert _leased(store, now=130.0).attempt == 2


def test_fail_is_final_until_redriven(store: MemoryStateStore) -> None:
    task = _leased(store, now=100.0)
    failed = fail_task(
        store, task, now=105.0, error_class=ErrorClass.PERMANENT, message="bad input"
    )
    assert (failed.status, failed.finished_at) == (TaskStatus.FAILED, 105.0)
    assert (failed.error_class, failed.error_message) == (ErrorClass.PERMANENT, "bad input")
    assert lease_task(store, JOB, TASK, owner="w2", ttl=30, now=1e9) is None
    assert _counts(store) == {TaskStatus.FAILED: 1}
    transition_task(store, failed, TaskStatus.PENDING, now=200.0)
    assert _leased(store, now=201.0).attempt == 2


def test_update_job_changes_fields_under_the_fence(store: MemoryStateStore) -> None:
    job = update_job(store, JOB, now=7.0, status=JobStatus.SPLITTING, message="splitting")
    assert (job.status, job.message, job.version, job.updated_at) == (
        JobStatus.SPLITTING,
        "splitting",
        1,
        7.0,
    )
    assert store.get_job(JOB) == job
    paused = update_job(store, JOB, now=8.0, paused=True)
    assert (paused.status, paused.paused, paused.version) == (JobStatus.SPLITTING, True, 2)


def test_update_job_refuses_illegal_status_and_missing_jobs(store: MemoryStateStore) -> None:
    with pytest.raises(IllegalTransitionError):
        update_job(store, JOB, now=1.0, status=JobStatus.SUCCEEDED)
    assert store.get_job(JOB) == Job(job_id=JOB, name="unit")
    with pytest.raises(NotFoundError):
        update_job(store, "job-missing", now=1.0, paused=True)


class _RacingWriter(MemoryStateStore):
    """Another writer updates the job between this caller's read and its write."""

    interleave = 1

    def put_job(self, job: Job, expected_version: int) -> Job:
        if self.interleave > 0:
            self.interleave -= 1
            current = self.get_job(job.job_id)
            assert current is not None
            other = dataclasses.replace(current, message="from the other writer")
            super().put_job(other, current.version)
        return super().put_job(job, expected_version)


def test_update_job_retries_after_a_conflict() -> None:
    store = _RacingWriter()
    store.create_job(Job(job_id=JOB, name="unit"))
    job = update_job(store, JOB, now=1.0, cancel_requested=True)
    # both writes landed: the retry re-read the other writer's version
    assert (job.cancel_requested, job.message, job.version) == (True, "from the other writer", 2)


def test_update_job_gives_up_under_endless_contention() -> None:
    store = _RacingWriter()
    store.create_job(Job(job_id=JOB, name="unit"))
    store.interleave = 10_000
    with pytest.raises(ConflictError, match="contention"):
        update_job(store, JOB, now=1.0, paused=True)
