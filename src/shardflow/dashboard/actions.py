"""The operator actions the dashboard offers: pause, resume, retry, cancel.

This is the interface the dashboard (and anything else that acts on behalf of a person
who is not at a terminal) shares with the CLI's control commands: each action is one
call of :mod:`shardflow.coordinator.control`, so the rules (idempotence, fenced writes,
the event recorded with who and when) live in one place. Pause and resume need only
the state store. Retry and cancel also need the job's queue (retried tasks are sent
again), object store (a retried job's ``_SUCCESS`` is withdrawn) and executor (a
cancelled job's slots are stopped); :func:`open_job_services` builds those from the
job's config snapshot, and tests inject their own.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shardflow.errors import UsageError
from shardflow.layout import validate_id
from shardflow.models import Job
from shardflow.statestore.base import StateStore

if TYPE_CHECKING:
    from shardflow.coordinator.services import Services


class JobAction(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """What an action did, in words an operator reads after clicking."""

    job_id: str
    action: JobAction
    changed: bool
    message: str


ServicesFactory = Callable[[StateStore, Job], "Services"]


def open_job_services(state: StateStore, job: Job) -> Services:
    """The ports of ``job`` as its config snapshot names them, sharing ``state``.

    Raises ConfigError if the snapshot no longer validates."""
    from shardflow.config import config_from_snapshot
    from shardflow.coordinator.services import open_services

    cfg = config_from_snapshot(job.config["config"])
    workspace = Path(str(job.config.get("workspace", ".shardflow")))
    svc = open_services(cfg, workspace)
    svc.state.close()  # the snapshot's own state handle: the caller's is used instead
    svc.state = state
    return svc


def perform(
    state: StateStore,
    job_id: str,
    action: JobAction,
    *,
    actor: str,
    now: Callable[[], float] = time.time,
    services: ServicesFactory = open_job_services,
) -> ActionOutcome:
    """Apply ``action`` to ``job_id`` on behalf of ``actor`` (recorded in the job's events).

    Idempotent: pausing a paused job changes nothing and says so. Raises
    :class:`~shardflow.errors.UsageError` when the job does not exist or the action
    does not apply (pausing a finished job, retrying a cancelled one), InvalidIdError
    for a malformed id, and lets store errors propagate.
    """
    from shardflow.coordinator import control

    validate_id(job_id, "job id")
    job = state.get_job(job_id)
    if job is None:
        raise UsageError(f"job {job_id} not found")
    if action in (JobAction.PAUSE, JobAction.RESUME):
        paused = action is JobAction.PAUSE
        result = control.set_paused(state, job_id, paused, actor=actor, now=now())
        word = "paused" if paused else "resumed"
        message = f"{word} {job_id}" if result.changed else f"{job_id} was already {word}"
        if result.changed and not paused:
            message += "; running slots take new tasks again"
        return ActionOutcome(job_id, action, result.changed, message)
    svc = services(state, job)
    if action is JobAction.CANCEL:
        result = control.cancel_job(svc, job_id, actor=actor, now=now)
        if not result.changed:
            return ActionOutcome(job_id, action, False, f"{job_id} was already cancelled")
        detail = result.detail
        message = (
            f"cancelled {job_id}: {detail.get('tasks', 0)} unfinished task(s) cancelled, "
            f"{detail.get('slots', 0)} slot(s) stopped; finished results are kept"
        )
        return ActionOutcome(job_id, action, True, message)
    result = control.retry_failed(svc, job_id, actor=actor, now=now)
    if not result.changed:
        return ActionOutcome(job_id, action, False, f"{job_id} has no failed tasks to retry")
    message = (
        f"re-queued {result.detail.get('tasks', 0)} failed task(s) of {job_id}; "
        f"they run when the job is driven again (shardflow run JOB.yaml --job-id {job_id})"
    )
    return ActionOutcome(job_id, action, True, message)
