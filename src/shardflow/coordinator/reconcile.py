"""Reconcile: bring the queue in line with the state store, and decide what comes next.

Run it as often as you like; it reads the stores, changes only what is overdue, and a
second run right after the first changes nothing (I5):

- a LEASED task whose lease expired (or whose owner is known dead) goes back to PENDING
  and gets a message, or FAILS when its attempts are spent;
- when the queue holds no message at all, every PENDING task and every RETRY_WAIT task
  that is due gets one (messages lost to dead letters or long backoffs come back here).

``python -m shardflow.coordinator.reconcile --state URL --job ID`` runs one pass; the
Slurm executor chains it after each array.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import ConflictError
from shardflow.models import ErrorClass, Task, TaskStatus
from shardflow.queue.base import Queue
from shardflow.statestore.base import StateStore, expire_lease, fail_task, task_counts
from shardflow.worker.env import task_message


@dataclass(frozen=True)
class ReconcileReport:
    expired: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    resent: tuple[str, ...] = ()
    counts: dict[TaskStatus, int] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return sum(n for s, n in self.counts.items() if not s.is_final)

    @property
    def runnable(self) -> int:
        return self.counts.get(TaskStatus.PENDING, 0) + self.counts.get(TaskStatus.LEASED, 0)

    @property
    def changed(self) -> bool:
        return bool(self.expired or self.failed or self.resent)


def iter_tasks(state: StateStore, job_id: str, status: TaskStatus) -> Iterator[Task]:
    after: str | None = None
    while True:
        page = state.list_tasks(job_id, status, limit=1000, after=after)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].task_id


def reconcile(
    state: StateStore,
    queue: Queue,
    job_id: str,
    *,
    policy: RetryPolicy,
    now: Callable[[], float],
    dead_owners: Collection[str] = (),
) -> ReconcileReport:
    expired: list[str] = []
    failed: list[str] = []
    resent: list[str] = []
    for task in list(iter_tasks(state, job_id, TaskStatus.LEASED)):
        lapsed = task.lease_expires_at is not None and task.lease_expires_at <= now()
        if not lapsed and task.lease_owner not in dead_owners:
            continue
        try:
            if task.attempts_used >= policy.max_attempts:
                fail_task(
                    state,
                    task,
                    now=now(),
                    error_class=ErrorClass.INFRASTRUCTURE,
                    message=f"worker {task.lease_owner} lost (lease expired) "
                    f"on attempt {task.attempt}",
                )
                failed.append(task.task_id)
            else:
                expire_lease(state, task, now=now())
                queue.send(task_message(job_id, task.task_id))
                expired.append(task.task_id)
        except ConflictError:
            continue  # its worker renewed or committed meanwhile
    if queue.is_empty():
        due = list(iter_tasks(state, job_id, TaskStatus.PENDING))
        due += [
            t
            for t in iter_tasks(state, job_id, TaskStatus.RETRY_WAIT)
            if t.not_before is None or t.not_before <= now()
        ]
        if due:
            queue.send_many([task_message(job_id, t.task_id) for t in due])
            resent = [t.task_id for t in due]
    counts = task_counts(state.read_counters(job_id))
    return ReconcileReport(tuple(expired), tuple(failed), tuple(resent), counts)


def next_retry_at(state: StateStore, job_id: str) -> float | None:
    """When the earliest RETRY_WAIT task becomes due (None when none waits)."""
    times = [t.not_before or 0.0 for t in iter_tasks(state, job_id, TaskStatus.RETRY_WAIT)]
    return min(times) if times else None
