"""One coordinator round, the same for ``shardflow run`` and the Slurm reconcile chain.

A round reads the job and its slots, reconciles the queue with the state store, fails the
job if no slot can ever run its handler, and starts slots while work waits. ``run``
(:mod:`.drive`) repeats rounds every quarter second; each link of the Slurm chain
(:mod:`.chain`) runs one and submits the next link. Everything a round knows comes from
the stores and the executor, so any number of rounds, from any process, agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from shardflow.coordinator import specs
from shardflow.coordinator.reconcile import ReconcileReport, iter_tasks, next_retry_at, reconcile
from shardflow.coordinator.services import Services
from shardflow.errors import NotFoundError
from shardflow.executors.base import SlotSpec
from shardflow.executors.local import worker_argv
from shardflow.models import Event, Job, JobStatus, TaskGroup, TaskStatus
from shardflow.statestore.base import LOAD_FAILURES, SETUP_FAILURES, task_counts, update_job

log = logging.getLogger("shardflow.coordinator")

FOLLOWUP_GROUP = "slurm-reconcile"
"""Task groups of this executor name hold reconcile links (Slurm), not worker slots."""

ROUND_RUNNING, ROUND_MAP_DONE, ROUND_ENDED = "running", "map_done", "ended"

START_LIMIT = 5
"""Groups of slots started with no task ever leased, after which the job fails."""

SETUP_FAILURE_LIMIT = 3
"""Slots whose handler setup failed, with no task done yet, after which the job fails
(restarting slots would only fail the same way)."""


@dataclass(frozen=True)
class RoundResult:
    """What a round saw and decided: ``outcome`` is :data:`ROUND_RUNNING` (work goes on),
    :data:`ROUND_MAP_DONE` (every task is final: aggregate) or :data:`ROUND_ENDED` (the job
    ended another way: cancelled, failed, finished elsewhere)."""

    job: Job
    outcome: str
    report: ReconcileReport | None = None
    counters: dict[str, int] = field(default_factory=dict)
    alive: list[str] = field(default_factory=list)


def slot_handles(svc: Services, job_id: str) -> list[str]:
    """Handles of the job's worker slots (not of its reconcile links)."""
    return [
        h
        for g in svc.state.list_task_groups(job_id)
        if g.executor != FOLLOWUP_GROUP
        for h in g.handles
    ]


def run_round(svc: Services, job_id: str) -> RoundResult:
    state = svc.state
    job = state.get_job(job_id)
    if job is None:
        raise NotFoundError(f"job {job_id} was purged while it ran")
    handles = slot_handles(svc, job_id)
    if job.status is JobStatus.CANCELLED or job.cancel_requested:
        svc.executor.cancel(handles)
        return RoundResult(job, ROUND_ENDED)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        return RoundResult(job, ROUND_ENDED)
    if job.status is JobStatus.AGGREGATING:
        return RoundResult(job, ROUND_MAP_DONE)
    alive = [h for h, s in svc.executor.poll(handles).items() if s.is_active]
    # with no slot of the job alive, whatever a slot held is orphaned: take it back now
    # rather than after its lease runs out
    dead: set[str] = set()
    if not alive:
        dead = {t.lease_owner or "" for t in iter_tasks(state, job_id, TaskStatus.LEASED)}
    report = reconcile(
        state,
        svc.queue(job_id),
        job_id,
        policy=specs.retry_policy(svc.cfg),
        now=svc.clock,
        dead_owners=dead,
    )
    counters = state.read_counters(job_id)
    result = RoundResult(job, ROUND_RUNNING, report, counters, alive)
    if report.remaining == 0 and job.status is JobStatus.RUNNING:
        return RoundResult(job, ROUND_MAP_DONE, report, counters, alive)
    failed = slots_cannot_start(svc, job_id, counters)
    if failed is not None:
        svc.executor.cancel(alive)
        return RoundResult(failed, ROUND_ENDED, report, counters)
    if not job.paused and _work_ready(svc, job_id, report):
        # keep the configured number of slots while work waits (a slot that died, or one
        # stopped past its lease, is replaced; a busy one is not doubled)
        missing = specs.slot_count(svc.cfg, report.runnable or 1) - len(alive)
        if missing > 0 and (not alive or report.counts.get(TaskStatus.PENDING, 0) > 0):
            groups = state.list_task_groups(job_id)
            started = sum(g.executor != FOLLOWUP_GROUP for g in groups)
            if started >= START_LIMIT and not counters.get("attempts", 0):
                # slots that keep exiting before they lease anything: starting more would
                # only loop (a store they cannot reach, a node that cannot run Python)
                message = (
                    f"{started} groups of worker slots exited before any of them took a task; "
                    f"see why in their logs: shardflow logs {job_id}"
                )
                log.error("%s", message)
                svc.executor.cancel(alive)
                failed = update_job(
                    state, job_id, now=svc.clock(), status=JobStatus.FAILED, message=message
                )
                return RoundResult(failed, ROUND_ENDED, report, counters)
            alive = alive + start_group(svc, job, len(groups) + 1, missing)
            result = RoundResult(job, ROUND_RUNNING, report, counters, alive)
    return result


def slots_cannot_start(svc: Services, job_id: str, counters: Mapping[str, int]) -> Job | None:
    """Fail the job (and return it) when no slot can ever run its handler: one slot could
    not load it, or its setup failed in :data:`SETUP_FAILURE_LIMIT` slots, and no task is
    done. None when slots can start."""
    if task_counts(counters)[TaskStatus.SUCCEEDED]:
        return None
    if counters.get(LOAD_FAILURES, 0):
        error = _last_error(svc, job_id, "handler_load_failed")
        message = f"the handler cannot be loaded: {error}; fix the job file or the handler"
    elif counters.get(SETUP_FAILURES, 0) >= SETUP_FAILURE_LIMIT:
        error = _last_error(svc, job_id, "setup_failed")
        message = (
            f"the handler's setup failed in {counters.get(SETUP_FAILURES, 0)} worker slots "
            f"and no task could run: {error} (slot logs: shardflow logs {job_id}); fix it "
            "and run again"
        )
    else:
        return None
    log.error("%s", message)
    return update_job(svc.state, job_id, now=svc.clock(), status=JobStatus.FAILED, message=message)


def _last_error(svc: Services, job_id: str, kind: str) -> str:
    last = [e for e in svc.state.list_events(job_id) if e.kind == kind][-1:]
    return str(last[0].detail.get("error", "")) if last else "see the slot logs"


def _work_ready(svc: Services, job_id: str, report: ReconcileReport) -> bool:
    if report.runnable:
        return True
    due = next_retry_at(svc.state, job_id)
    return due is not None and due <= svc.clock()


def start_group(svc: Services, job: Job, round_no: int, count: int) -> list[str]:
    """Start ``count`` worker slots as task group ``g{round_no}`` and record it."""
    cfg = svc.cfg
    group_id = f"g{round_no:03d}"
    argv = worker_argv(svc.state.url, job.job_id, svc.workspace)
    if cfg.backends.endpoint_url:
        argv += ["--endpoint-url", cfg.backends.endpoint_url]
    if cfg.backends.region:
        argv += ["--region", cfg.backends.region]
    handles = svc.executor.start_slots(SlotSpec(job.job_id, group_id, count, argv))
    now = svc.clock()
    svc.state.put_task_group(
        TaskGroup(job.job_id, group_id, round_no, count, svc.executor.name, tuple(handles), now)
    )
    svc.state.append_event(
        Event(job.job_id, "slots_started", now, "shardflow", {"group": group_id, "slots": count})
    )
    log.info("started %d worker slots (%s)", count, group_id)
    return handles
