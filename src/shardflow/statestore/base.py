"""The StateStore port and the task-lifecycle logic written once over it.

Adapters: :mod:`.sqlite` (embedded default), :mod:`.dynamodb` (AWS), :mod:`.memory`
(fake for unit tests). Each adapter provides small atomic primitives; leasing,
heartbeats, commits and retries are the functions below, the same for every adapter.

Primitives and their contract (``tests/contract/test_statestore.py``):

- ``create_job`` is create-only (False when the id exists); ``put_job`` and ``cas_task``
  write iff the stored version equals ``expected_version`` and store version + 1,
  raising :class:`ConflictError` otherwise. That version is the fencing token.
- ``cas_task`` applies ``counters`` (name → delta) in the same atomic step, so job
  counts are never scanned: ``read_counters`` sums the counter shards.
- ``cas_tasks`` applies many such writes, each fenced on its own version: a refused one
  (moved on, or missing) is None in the answer and changes nothing, the others land. The
  SQLite store does them in one transaction (a slot commits a group of tasks at once);
  stores without a cheaper way write one by one (:func:`cas_each`).
- ``register_tasks`` inserts tasks that do not exist yet (idempotent) and counts them.
- ``list_tasks`` reads tasks by status through an index, paginated by task id.

Counter names: ``tasks.<STATUS>`` for task counts, ``items.succeeded``,
``items.failed``, ``items.rejected``, ``rows``, ``attempts``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from shardflow.errors import ConflictError, NotFoundError
from shardflow.models import (
    ErrorClass,
    Event,
    Job,
    JobStatus,
    Task,
    TaskGroup,
    TaskStatus,
    check_transition,
)
from shardflow.ratelimit.base import BucketStore


@runtime_checkable
class StateStore(BucketStore, Protocol):
    @property
    def url(self) -> str: ...

    def create_job(self, job: Job) -> bool: ...

    def get_job(self, job_id: str) -> Job | None: ...

    def put_job(self, job: Job, expected_version: int) -> Job: ...

    def list_jobs(self, limit: int = 50) -> list[Job]:
        """Most recently created first."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Remove the job and its tasks, counters, events and task groups."""
        ...

    def register_tasks(self, tasks: Sequence[Task]) -> int: ...

    def get_task(self, job_id: str, task_id: str) -> Task | None: ...

    def cas_task(self, task: Task, expected_version: int, counters: Mapping[str, int]) -> Task: ...

    def cas_tasks(self, writes: Sequence[TaskWrite]) -> list[Task | None]: ...

    def list_tasks(
        self,
        job_id: str,
        status: TaskStatus | None = None,
        *,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[Task]: ...

    def read_counters(self, job_id: str) -> dict[str, int]: ...

    def add_counters(self, job_id: str, deltas: Mapping[str, int]) -> None: ...

    def append_event(self, event: Event) -> None: ...

    def list_events(self, job_id: str, *, limit: int = 100) -> list[Event]:
        """The latest ``limit`` events, oldest first."""
        ...

    def put_task_group(self, group: TaskGroup) -> None: ...

    def list_task_groups(self, job_id: str) -> list[TaskGroup]: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class TaskWrite:
    """One fenced task write: ``task`` as version ``expected_version + 1``, and the
    counter deltas that go with it."""

    task: Task
    expected_version: int
    counters: Mapping[str, int]


def cas_each(store: StateStore, writes: Sequence[TaskWrite]) -> list[Task | None]:
    """``cas_tasks`` as one ``cas_task`` per write, for stores with no batch of their own."""
    done: list[Task | None] = []
    for write in writes:
        try:
            done.append(store.cas_task(write.task, write.expected_version, write.counters))
        except (ConflictError, NotFoundError):
            done.append(None)
    return done


SETUP_FAILURES = "slots.setup_failed"
"""The job counter of worker slots whose handler setup raised (they took no task)."""
LOAD_FAILURES = "slots.load_failed"
"""The job counter of worker slots that could not load the handler at all."""


def status_counter(status: TaskStatus) -> str:
    return f"tasks.{status.value}"


def task_counts(counters: Mapping[str, int]) -> dict[TaskStatus, int]:
    return {s: int(counters.get(status_counter(s), 0)) for s in TaskStatus}


def task_write(
    task: Task,
    target: TaskStatus,
    *,
    now: float,
    counters: Mapping[str, int] | None = None,
    **changes: Any,
) -> TaskWrite:
    """The fenced write that moves ``task`` to ``target`` (a legal transition), with the
    status counters it moves."""
    check_transition(task.status, target)
    new = dataclasses.replace(task, status=target, updated_at=now, **changes)
    deltas: dict[str, int] = dict(counters or {})
    if target is not task.status:
        deltas[status_counter(task.status)] = deltas.get(status_counter(task.status), 0) - 1
        deltas[status_counter(target)] = deltas.get(status_counter(target), 0) + 1
    return TaskWrite(new, task.version, deltas)


def transition_task(
    store: StateStore,
    task: Task,
    target: TaskStatus,
    *,
    now: float,
    counters: Mapping[str, int] | None = None,
    **changes: Any,
) -> Task:
    """Move ``task`` to ``target`` fenced on its version; raise ConflictError if refused."""
    write = task_write(task, target, now=now, counters=counters, **changes)
    return store.cas_task(write.task, write.expected_version, write.counters)


def leasable(task: Task, now: float) -> bool:
    if task.status is TaskStatus.PENDING:
        return True
    if task.status is TaskStatus.RETRY_WAIT:
        return task.not_before is None or task.not_before <= now
    if task.status is TaskStatus.LEASED:
        return task.lease_expires_at is not None and task.lease_expires_at <= now
    return False


def lease_wait(task: Task, now: float) -> float | None:
    """Seconds until a task that is not leasable now may become leasable: the rest of a
    live lease (its holder may be dead) or of a retry's backoff; None when nothing will
    make it leasable (final, or in a state no message should start)."""
    if task.status is TaskStatus.LEASED and task.lease_expires_at is not None:
        return max(0.0, task.lease_expires_at - now)
    if task.status is TaskStatus.RETRY_WAIT and task.not_before is not None:
        return max(0.0, task.not_before - now)
    return None


def lease_task(
    store: StateStore,
    job_id: str,
    task_id: str,
    *,
    owner: str,
    ttl: float,
    now: float,
    max_attempts: int | None = None,
) -> Task | None:
    """Lease a task for a new attempt; None if it is not leasable or another won.

    A LEASED task whose lease expired is taken over (its holder is presumed dead:
    LEASED → PENDING → LEASED in one fenced write) — unless its attempts are spent
    (``max_attempts``): then it FAILS as an infrastructure error instead, so a task that
    keeps killing its workers never runs more often than the retry policy allows.
    """
    task = store.get_task(job_id, task_id)
    if task is None:
        raise NotFoundError(f"task {job_id}/{task_id} not found")
    if not leasable(task, now):
        return None
    if task.status is TaskStatus.LEASED:
        check_transition(TaskStatus.LEASED, TaskStatus.PENDING)
        if max_attempts is not None and task.attempts_used >= max_attempts:
            # a refused write means someone else moved the task meanwhile: fine either way
            with contextlib.suppress(ConflictError):
                fail_task(
                    store,
                    task,
                    now=now,
                    error_class=ErrorClass.INFRASTRUCTURE,
                    message=f"worker {task.lease_owner} lost (lease expired) "
                    f"on attempt {task.attempt}; attempts spent",
                )
            return None
    try:
        return transition_task(
            store,
            task,
            TaskStatus.LEASED,
            now=now,
            counters={"attempts": 1},
            attempt=task.attempt + 1,
            lease_owner=owner,
            lease_expires_at=now + ttl,
            not_before=None,
            started_at=task.started_at or now,
        )
    except ConflictError:
        return None


def renew_lease(store: StateStore, task: Task, *, ttl: float, now: float) -> Task:
    """Extend the lease held through ``task``; ConflictError means it was lost."""
    if task.status is not TaskStatus.LEASED:
        raise ConflictError(f"task {task.task_id} is {task.status}, not LEASED")
    return transition_task(store, task, TaskStatus.LEASED, now=now, lease_expires_at=now + ttl)


def release_task(store: StateStore, task: Task, *, now: float, reason: str) -> Task:
    """Give the task back (preemption): LEASED → PENDING, attempt kept for the count."""
    return transition_task(
        store,
        task,
        TaskStatus.PENDING,
        now=now,
        lease_owner=None,
        lease_expires_at=None,
        error_message=reason,
    )


def expire_lease(store: StateStore, task: Task, *, now: float) -> Task:
    """LEASED with an expired lease → PENDING (the holder died)."""
    return release_task(store, task, now=now, reason="lease expired")


def commit_task(
    store: StateStore,
    task: Task,
    *,
    now: float,
    result_attempt: int,
    items_total: int,
    items_succeeded: int,
    items_failed: int,
    items_rejected: int,
    rows: int,
    metrics: Mapping[str, float] | None = None,
    metric_counters: Mapping[str, int] | None = None,
) -> Task:
    """LEASED → SUCCEEDED naming the marker's attempt, fenced on the holder's version.

    ``metrics`` are stored on the task; ``metric_counters`` are added to the job's
    counters in the same atomic write. :func:`commit_write` is the same write, for
    :meth:`StateStore.cas_tasks` (a group of commits at once)."""
    write = commit_write(
        task,
        now=now,
        result_attempt=result_attempt,
        items_total=items_total,
        items_succeeded=items_succeeded,
        items_failed=items_failed,
        items_rejected=items_rejected,
        rows=rows,
        metrics=metrics,
        metric_counters=metric_counters,
    )
    return store.cas_task(write.task, write.expected_version, write.counters)


def commit_write(
    task: Task,
    *,
    now: float,
    result_attempt: int,
    items_total: int,
    items_succeeded: int,
    items_failed: int,
    items_rejected: int,
    rows: int,
    metrics: Mapping[str, float] | None = None,
    metric_counters: Mapping[str, int] | None = None,
) -> TaskWrite:
    """The write of :func:`commit_task`."""
    return task_write(
        task,
        TaskStatus.SUCCEEDED,
        now=now,
        counters={
            "items.succeeded": items_succeeded,
            "items.failed": items_failed,
            "items.rejected": items_rejected,
            "rows": rows,
            **(metric_counters or {}),
        },
        metrics=dict(metrics or {}),
        result_attempt=result_attempt,
        items_total=items_total,
        items_succeeded=items_succeeded,
        items_failed=items_failed,
        rows=rows,
        lease_owner=None,
        lease_expires_at=None,
        finished_at=now,
        error_class=None,
        error_message=None,
    )


def reopen_task(
    store: StateStore,
    task: Task,
    *,
    now: float,
    reason: str,
    items_succeeded: int,
    items_failed: int,
    items_rejected: int,
    rows: int,
) -> Task:
    """SUCCEEDED → PENDING when the committed result turned out corrupt; its counts are
    taken back out of the job's counters in the same write."""
    return transition_task(
        store,
        task,
        TaskStatus.PENDING,
        now=now,
        counters={
            "items.succeeded": -items_succeeded,
            "items.failed": -items_failed,
            "items.rejected": -items_rejected,
            "rows": -rows,
        },
        result_attempt=None,
        finished_at=None,
        items_succeeded=0,
        items_failed=0,
        rows=0,
        error_class=ErrorClass.INFRASTRUCTURE,
        error_message=reason[:2000],
    )


def retry_later(
    store: StateStore,
    task: Task,
    *,
    now: float,
    delay: float,
    error_class: ErrorClass,
    message: str,
) -> Task:
    return transition_task(
        store,
        task,
        TaskStatus.RETRY_WAIT,
        now=now,
        not_before=now + delay,
        lease_owner=None,
        lease_expires_at=None,
        error_class=error_class,
        error_message=message[:2000],
    )


def fail_task(
    store: StateStore, task: Task, *, now: float, error_class: ErrorClass, message: str
) -> Task:
    """LEASED → FAILED for good: every item of the task counts as failed."""
    return transition_task(
        store,
        task,
        TaskStatus.FAILED,
        now=now,
        counters={"items.failed": task.items_total},
        lease_owner=None,
        lease_expires_at=None,
        finished_at=now,
        error_class=error_class,
        error_message=message[:2000],
    )


def update_job(store: StateStore, job_id: str, *, now: float, **changes: Any) -> Job:
    """Read-modify-write a job with its version fence, retrying on conflict."""
    for _ in range(50):
        job = store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        status = changes.get("status", job.status)
        assert isinstance(status, JobStatus)
        check_transition(job.status, status)
        new = dataclasses.replace(job, updated_at=now, **changes)
        try:
            return store.put_job(new, job.version)
        except ConflictError:
            continue
    raise ConflictError(f"job {job_id}: too much contention updating it")
