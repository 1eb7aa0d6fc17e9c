"""Job control: pause, resume, retry, cancel, purge, recover.

Each is a short function over the ports, atomic where it matters (fenced writes) and
idempotent: running it twice, or from two terminals at once, leaves the same state, and
every call that changes something is recorded in the job's events with who and when.
The CLI, the dashboard and the Slurm reconcile step all call these.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from shardflow.coordinator.reconcile import iter_tasks, reconcile
from shardflow.coordinator.services import Services
from shardflow.coordinator.specs import retry_policy
from shardflow.errors import ConflictError, InvalidIdError, StoreError, UsageError
from shardflow.layout import Layout, LocalPaths
from shardflow.models import ErrorClass, Event, Job, JobStatus, TaskStatus
from shardflow.security import audit
from shardflow.statestore.base import StateStore, transition_task, update_job

log = logging.getLogger("shardflow.control")


@dataclass(frozen=True)
class ControlResult:
    job: Job
    changed: bool
    detail: dict[str, object] = field(default_factory=dict)


def _event(
    state: StateStore, job_id: str, kind: str, actor: str, now: float, **detail: object
) -> None:
    state.append_event(Event(job_id, kind, now, actor, dict(detail)))


def _require(state: StateStore, job_id: str) -> Job:
    job = state.get_job(job_id)
    if job is None:
        raise UsageError(f"job {job_id} not found")
    return job


def set_paused(
    state: StateStore, job_id: str, paused: bool, *, actor: str, now: float
) -> ControlResult:
    """Stop (or restart) new leases and token issuance; running items finish."""
    job = _require(state, job_id)
    if job.status.is_final:
        raise UsageError(
            f"job {job_id} is {job.status}: there is nothing to {'pause' if paused else 'resume'}"
        )
    if job.paused == paused:
        return ControlResult(job, False)
    job = update_job(state, job_id, now=now, paused=paused)
    _pause_buckets(state, job_id, paused, now)
    _event(state, job_id, "paused" if paused else "resumed", actor, now)
    audit.record_for_job(job, actor=actor, action="job.pause" if paused else "job.resume", at=now)
    return ControlResult(job, True)


def _pause_buckets(state: StateStore, job_id: str, paused: bool, now: float) -> None:
    try:
        from shardflow.ratelimit import control as limits
    except ImportError:  # the rate limiter is optional for jobs without limits
        return
    limits.set_paused(state, job_id, paused, now)


def cancel_job(
    svc: Services, job_id: str, *, actor: str, now: Callable[[], float]
) -> ControlResult:
    """Mark the job cancelled, cancel its non-final tasks, stop its slots, drop its queue.

    Finished results stay where they are. A worker still running an item finds its
    task CANCELLED at its next fenced write and stops without committing.
    """
    state = svc.state
    job = _require(state, job_id)
    if job.status is JobStatus.CANCELLED:
        return ControlResult(job, False)
    if job.status.is_final:
        raise UsageError(f"job {job_id} already {job.status}; use `shardflow purge` to remove it")
    if not job.cancel_requested:
        job = update_job(state, job_id, now=now(), cancel_requested=True)
    handles = [h for g in state.list_task_groups(job_id) for h in g.handles]
    cancelled = _cancel_tasks(state, job_id, now)
    svc.executor.cancel(handles)
    # a worker may have released its task (LEASED → PENDING) while it was being stopped
    cancelled += _cancel_tasks(state, job_id, now)
    try:
        svc.queue(job_id).purge()
    except StoreError as exc:
        # e.g. a dashboard role without sqs:PurgeQueue: the messages left are harmless,
        # since a slot deletes a delivery whose task is final
        log.warning("cancel %s: queue not purged (%s); slots will drop its messages", job_id, exc)
    job = update_job(state, job_id, now=now(), status=JobStatus.CANCELLED)
    _event(state, job_id, "cancelled", actor, now(), tasks=cancelled, slots=len(handles))
    audit.record(
        svc.store,
        actor=actor,
        action="job.cancel",
        job_id=job_id,
        at=now(),
        detail={"tasks": cancelled, "slots": len(handles)},
    )
    return ControlResult(job, True, {"tasks": cancelled, "slots": len(handles)})


def _cancel_tasks(state: StateStore, job_id: str, now: Callable[[], float]) -> int:
    """Move every non-final task to CANCELLED, going over them until none is left (a task a
    worker moved meanwhile is picked up again on the next pass)."""
    cancelled = 0
    for _ in range(20):
        left = 0
        for status in (TaskStatus.PENDING, TaskStatus.RETRY_WAIT, TaskStatus.LEASED):
            for task in list(iter_tasks(state, job_id, status)):
                try:
                    transition_task(state, task, TaskStatus.CANCELLED, now=now(), lease_owner=None)
                    cancelled += 1
                except ConflictError:
                    left += 1
        if not left:
            return cancelled
    return cancelled


def retry_failed(
    svc: Services,
    job_id: str,
    *,
    actor: str,
    now: Callable[[], float],
    classes: Collection[ErrorClass] = (),
) -> ControlResult:
    """Re-drive FAILED tasks (all, or those whose error class is in ``classes``).

    Each gets a fresh set of attempts; the job goes back to RUNNING and its previous
    output stops being current (``_SUCCESS`` is removed until the new aggregation).
    """
    state = svc.state
    job = _require(state, job_id)
    if job.status is JobStatus.CANCELLED:
        raise UsageError(f"job {job_id} was cancelled; submit it again under a new --job-id")
    picked = [
        t
        for t in iter_tasks(state, job_id, TaskStatus.FAILED)
        if not classes or (t.error_class or ErrorClass.UNKNOWN) in classes
    ]
    queue = svc.queue(job_id)
    moved = []
    for task in picked:
        try:
            transition_task(
                state,
                task,
                TaskStatus.PENDING,
                now=now(),
                counters={"items.failed": -task.items_total},
                attempt_floor=task.attempt,
                finished_at=None,
                error_class=None,
                error_message=None,
            )
        except ConflictError:
            continue
        moved.append(task.task_id)
    if not moved:
        return ControlResult(job, False, {"tasks": 0})
    from shardflow.worker.env import task_message

    queue.send_many([task_message(job_id, t) for t in moved])
    layout = Layout(job_id)
    svc.store.delete(layout.output_success())
    svc.store.delete(layout.output_manifest())
    if job.status is not JobStatus.RUNNING:
        job = update_job(state, job_id, now=now(), status=JobStatus.RUNNING, message=None)
    _event(state, job_id, "retried", actor, now(), tasks=len(moved), classes=sorted(classes))
    audit.record(
        svc.store,
        actor=actor,
        action="job.retry",
        job_id=job_id,
        at=now(),
        detail={"tasks": len(moved), "classes": sorted(classes)},
    )
    return ControlResult(job, True, {"tasks": len(moved)})


def active_slots(svc: Services, job_id: str) -> list[str]:
    from shardflow.coordinator.round import FOLLOWUP_GROUP

    groups = svc.state.list_task_groups(job_id)
    handles = [h for g in groups if g.executor != FOLLOWUP_GROUP for h in g.handles]
    return [h for h, s in svc.executor.poll(handles).items() if s.is_active]


def purge_job(
    svc: Services, job_id: str, *, actor: str, now: Callable[[], float], force: bool = False
) -> ControlResult:
    """Remove every object, message and row of the job, and its local logs and scratch."""
    state = svc.state
    job = _require(state, job_id)
    running = active_slots(svc, job_id)
    if running and not force:
        raise UsageError(
            f"job {job_id} still has {len(running)} running slot(s); "
            "cancel it first (`shardflow cancel`), or purge with --force"
        )
    if running:
        svc.executor.cancel(running)
    removed = svc.store.delete_prefix(Layout(job_id).root + "/")
    svc.queue(job_id).purge()
    state.delete_buckets(f"{job_id}/")
    state.delete_job(job_id)
    workspace = Path(str(job.config.get("workspace", svc.workspace)))
    shutil.rmtree(LocalPaths(workspace, workspace).job_log_dir(job_id), ignore_errors=True)
    # checkpoints: the default scratch, and `worker.scratch` as this host sees it (slots
    # start in the folder the workspace is in; node-local scratch elsewhere stays there)
    scratch = ((job.config.get("config") or {}).get("worker") or {}).get("scratch")
    roots = [workspace / "scratch"] + ([workspace.parent / str(scratch)] if scratch else [])
    for root in roots:
        try:
            shutil.rmtree(LocalPaths(workspace, root).job_scratch_dir(job_id), ignore_errors=True)
        except InvalidIdError as exc:  # the job's folder there is a link out: left alone
            log.warning("purge %s: not removing checkpoints: %s", job_id, exc)
    audit.record(
        svc.store,
        actor=actor,
        action="job.purge",
        job_id=job_id,
        at=now(),
        detail={"objects": removed, "slots_cancelled": len(running)},
    )
    return ControlResult(job, True, {"objects": removed, "slots_cancelled": len(running)})


def recover_job(
    svc: Services, job_id: str, *, actor: str, now: Callable[[], float]
) -> ControlResult:
    """Re-drive a stuck job: leases of slots that are gone are expired and their tasks
    re-queued, lost messages re-sent, orphaned temp files swept. Reports what it did."""
    state = svc.state
    job = _require(state, job_id)
    alive = set(active_slots(svc, job_id))
    dead: set[str] = set()
    if not alive:
        dead = {t.lease_owner or "" for t in iter_tasks(state, job_id, TaskStatus.LEASED)}
    report = reconcile(
        state,
        svc.queue(job_id),
        job_id,
        policy=retry_policy(svc.cfg),
        now=now,
        dead_owners=dead,
    )
    from shardflow.coordinator.sweep import sweep_job

    swept = sweep_job(svc.store, state, job_id, now=now())
    detail: dict[str, object] = {
        "expired_leases": list(report.expired),
        "failed": list(report.failed),
        "resent": list(report.resent),
        "slots_alive": len(alive),
        "swept": swept,
    }
    changed = report.changed or any(swept.values())
    if changed:
        _event(state, job_id, "recovered", actor, now(), **detail)
        audit.record(
            svc.store, actor=actor, action="job.recover", job_id=job_id, at=now(), detail=detail
        )
    return ControlResult(job, changed, detail)
