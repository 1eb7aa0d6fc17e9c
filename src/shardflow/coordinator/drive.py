"""Driving a submitted job to its end: start slots, reconcile, aggregate, finish.

``shardflow run`` calls :func:`drive` after submitting. Everything it knows comes from
the stores, so killing it and running it again with the same job id carries on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shardflow.aggregate.run import AggregateSpec, aggregate_job
from shardflow.backends import (
    open_object_store,
    open_queue,
    open_state_store,
    queue_url,
    register_input_schemes,
)
from shardflow.coordinator import specs
from shardflow.coordinator.reconcile import ReconcileReport, next_retry_at, reconcile
from shardflow.errors import CorruptResultError, NotFoundError
from shardflow.executors.base import Executor, SlotSpec
from shardflow.executors.local import worker_argv
from shardflow.layout import Layout
from shardflow.models import Event, Job, JobStatus, Phase, TaskGroup, TaskStatus
from shardflow.objectstore.base import ObjectStore
from shardflow.queue.base import Queue
from shardflow.statestore.base import SETUP_FAILURES, StateStore, task_counts, update_job

if TYPE_CHECKING:
    from shardflow.config import JobConfig

log = logging.getLogger("shardflow.coordinator")

# task groups of this executor name hold reconcile links (Slurm), not worker slots
FOLLOWUP_GROUP = "slurm-reconcile"


@dataclass
class Services:
    """The ports a coordinator uses, built once from the job's config."""

    cfg: JobConfig
    state: StateStore
    store: ObjectStore
    executor: Executor
    workspace: Path
    queues: dict[str, Queue] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def queue(self, job_id: str) -> Queue:
        if job_id not in self.queues:
            self.queues[job_id] = open_queue(
                queue_url(self.cfg.backends.state, self.cfg.backends.queue),
                job_id,
                aws=specs.aws_options(self.cfg),
            )
        return self.queues[job_id]


def open_services(cfg: JobConfig, workspace: Path) -> Services:
    from shardflow.backends import make_executor

    aws = specs.aws_options(cfg)
    register_input_schemes(specs.split_spec(cfg).paths, aws)
    return Services(
        cfg=cfg,
        state=open_state_store(cfg.backends.state, aws),
        store=open_object_store(cfg.backends.storage, aws),
        executor=make_executor(cfg.backends.executor, workspace, cfg),
        workspace=workspace,
    )


@dataclass(frozen=True)
class Progress:
    job: Job
    counters: dict[str, int]
    report: ReconcileReport
    slots: int


def drive(
    svc: Services,
    job_id: str,
    *,
    on_progress: Callable[[Progress], None] = lambda p: None,
    poll_interval: float = 0.25,
) -> Job:
    """Run the job until every task is final, then aggregate; return the final job."""
    while True:
        job = _map_phase(svc, job_id, on_progress, poll_interval)
        if job is not None:
            return job
        try:
            job = finish(svc, job_id)
            _wait_for_local_slots(svc)
            return job
        except CorruptResultError as exc:
            log.error("%s; running those tasks again", exc)
            update_job(
                svc.state, job_id, now=svc.clock(), status=JobStatus.RUNNING, phase=Phase.MAP
            )


def _map_phase(
    svc: Services,
    job_id: str,
    on_progress: Callable[[Progress], None],
    poll_interval: float,
) -> Job | None:
    """Run until every task is final (None), or the job ends another way (the job)."""
    state, cfg = svc.state, svc.cfg
    policy = specs.retry_policy(cfg)
    queue = svc.queue(job_id)
    groups = state.list_task_groups(job_id)
    handles = [h for g in groups if g.executor != FOLLOWUP_GROUP for h in g.handles]
    while True:
        job = state.get_job(job_id)
        if job is None:
            svc.executor.cancel(handles)
            raise NotFoundError(f"job {job_id} was purged while it ran")
        if job.status is JobStatus.CANCELLED or job.cancel_requested:
            svc.executor.cancel([h for g in groups for h in g.handles])
            return job
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return job
        if job.status is JobStatus.AGGREGATING:
            return None
        polled = svc.executor.poll(handles)
        alive = [h for h, s in polled.items() if s.is_active]
        dead_owners: set[str] = set()
        if not alive and svc.executor.name == "local":
            # every local slot of this job has exited: whatever they held is orphaned
            dead_owners = {
                t.lease_owner or ""
                for t in state.list_tasks(job_id, TaskStatus.LEASED, limit=10_000)
            }
        report = reconcile(
            state, queue, job_id, policy=policy, now=svc.clock, dead_owners=dead_owners
        )
        counters = state.read_counters(job_id)
        on_progress(Progress(job, counters, report, len(alive)))
        if report.remaining == 0:
            return None
        if setup_never_works(counters):
            svc.executor.cancel(handles)
            return fail_on_setup(svc, job_id, counters)
        if not job.paused and _work_ready(svc, job_id, report):
            # keep the configured number of slots while work waits (a slot that died,
            # or one stopped past its lease, is replaced; a busy one is not doubled)
            missing = specs.slot_count(cfg, report.runnable or 1) - len(alive)
            if missing > 0 and (not alive or report.counts.get(TaskStatus.PENDING, 0) > 0):
                handles += start_group(svc, job, len(groups) + 1, missing)
                groups = state.list_task_groups(job_id)
        svc.sleep(poll_interval)


SETUP_FAILURE_LIMIT = 3
"""Slots whose handler setup failed, with no task done yet, after which the job fails
(restarting slots would only fail the same way)."""


def setup_never_works(counters: Mapping[str, int]) -> bool:
    done = task_counts(counters)[TaskStatus.SUCCEEDED]
    return counters.get(SETUP_FAILURES, 0) >= SETUP_FAILURE_LIMIT and not done


def fail_on_setup(svc: Services, job_id: str, counters: Mapping[str, int]) -> Job:
    last = [e for e in svc.state.list_events(job_id) if e.kind == "setup_failed"][-1:]
    error = str(last[0].detail.get("error", "")) if last else "see the slot logs"
    message = (
        f"the handler's setup failed in {counters.get(SETUP_FAILURES, 0)} worker slots and no "
        f"task could run: {error} (slot logs: shardflow logs {job_id}); fix it and run again"
    )
    log.error("%s", message)
    return update_job(svc.state, job_id, now=svc.clock(), status=JobStatus.FAILED, message=message)


def _wait_for_local_slots(svc: Services) -> None:
    """Local slots exit once the queue is empty; let them, so none outlives `run`."""
    from shardflow.executors.local import LocalExecutor

    if isinstance(svc.executor, LocalExecutor):
        svc.executor.wait(timeout=30)


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


def finish(svc: Services, job_id: str) -> Job:
    """Aggregate a job whose tasks are all final and set its final status."""
    state, cfg = svc.state, svc.cfg
    job = state.get_job(job_id)
    assert job is not None
    if job.status is not JobStatus.AGGREGATING:
        job = update_job(
            state, job_id, now=svc.clock(), status=JobStatus.AGGREGATING, phase=Phase.AGGREGATE
        )
    manifest = aggregate_job(
        job_id=job_id,
        state=state,
        store=svc.store,
        spec=AggregateSpec(
            fan_in=cfg.aggregate.fan_in,
            key_column=cfg.output.key_column,
            output_format=cfg.output.format,
            output_name=cfg.output.name,
            compression=cfg.output.compression,
            declared_schema=cfg.output.schema_ or None,
        ),
        split=specs.split_spec(cfg),
        # per process: two coordinators of one job must not share (and delete) files
        scratch=svc.workspace / "scratch" / job_id / f"aggregate-{os.getpid()}",
        now=svc.clock,
    )
    threshold = specs.failure_threshold(cfg)
    failed = threshold.exceeded(manifest.failures, manifest.items_total)
    output_uri = svc.store.uri(Layout(job_id).output(cfg.output.name, cfg.output.format))
    status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
    message = (
        f"{manifest.failures} of {manifest.items_total} items failed, above the tolerated "
        f"{threshold.describe()}"
        if failed
        else None
    )
    job = update_job(
        state,
        job_id,
        now=svc.clock(),
        status=status,
        phase=Phase.FINALIZE,
        output_uri=output_uri,
        message=message,
    )
    state.append_event(
        Event(
            job_id,
            "finished",
            svc.clock(),
            "shardflow",
            {"status": status.value, "rows": manifest.rows, "failures": manifest.failures},
        )
    )
    return job
