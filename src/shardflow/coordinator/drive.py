"""Driving a submitted job to its end: start slots, reconcile, aggregate, finish.

``shardflow run`` calls :func:`drive` after submitting. Everything it knows comes from
the stores, so killing it and running it again with the same job id carries on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from shardflow.aggregate.run import AggregateSpec, Aggregation
from shardflow.coordinator import specs
from shardflow.coordinator.reconcile import ReconcileReport
from shardflow.coordinator.round import ROUND_ENDED, ROUND_MAP_DONE, run_round
from shardflow.coordinator.services import Services, open_services
from shardflow.errors import CorruptResultError, SchemaDriftError, TasksNotFinalError
from shardflow.layout import Layout
from shardflow.models import Event, Job, JobStatus, Phase
from shardflow.statestore.base import update_job

log = logging.getLogger("shardflow.coordinator")

__all__ = ["Progress", "Services", "drive", "finish", "new_aggregation", "open_services"]


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
    """Run the job until every task is final, then aggregate; return the final job.

    Between rounds, results already committed are merged into the output in task order
    (:class:`~shardflow.aggregate.run.Aggregation`), so that little is left to merge when
    the last task commits.
    """
    aggregation = new_aggregation(svc, job_id)
    while True:
        job = _map_phase(svc, job_id, on_progress, poll_interval, aggregation)
        if job is not None:
            return job
        try:
            job = finish(svc, job_id, aggregation)
            _wait_for_local_slots(svc)
            return job
        except (CorruptResultError, TasksNotFinalError) as exc:
            log.error("%s; running those tasks again", exc)
            update_job(
                svc.state, job_id, now=svc.clock(), status=JobStatus.RUNNING, phase=Phase.MAP
            )


def _map_phase(
    svc: Services,
    job_id: str,
    on_progress: Callable[[Progress], None],
    poll_interval: float,
    aggregation: Aggregation,
) -> Job | None:
    """Run rounds until every task is final (None), or the job ends another way (the job)."""
    while True:
        result = run_round(svc, job_id)
        if result.report is not None:
            on_progress(Progress(result.job, result.counters, result.report, len(result.alive)))
        if result.outcome == ROUND_ENDED:
            return result.job
        if result.outcome == ROUND_MAP_DONE:
            return None
        started = svc.clock()
        aggregation.advance(budget=AGGREGATE_BUDGET)
        svc.sleep(max(0.0, poll_interval - (svc.clock() - started)))


AGGREGATE_BUDGET = 0.5
"""Seconds of merging per round while the map runs (the slots' polls are not held up)."""


def _wait_for_local_slots(svc: Services) -> None:
    """Local slots exit once the queue is empty; let them, so none outlives `run`."""
    from shardflow.executors.local import LocalExecutor

    if isinstance(svc.executor, LocalExecutor):
        svc.executor.wait(timeout=30)


def new_aggregation(svc: Services, job_id: str) -> Aggregation:
    cfg = svc.cfg
    return Aggregation(
        job_id=job_id,
        state=svc.state,
        store=svc.store,
        spec=AggregateSpec(
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


def finish(svc: Services, job_id: str, aggregation: Aggregation | None = None) -> Job:
    """Aggregate a job whose tasks are all final and set its final status."""
    state, cfg = svc.state, svc.cfg
    job = state.get_job(job_id)
    assert job is not None
    if job.status is not JobStatus.AGGREGATING:
        job = update_job(
            state, job_id, now=svc.clock(), status=JobStatus.AGGREGATING, phase=Phase.AGGREGATE
        )
    try:
        manifest = (aggregation or new_aggregation(svc, job_id)).finish()
    except SchemaDriftError as exc:
        log.error("%s", exc)
        job = update_job(state, job_id, now=svc.clock(), status=JobStatus.FAILED, message=str(exc))
        state.append_event(
            Event(job_id, "finished", svc.clock(), "shardflow", {"status": "FAILED"})
        )
        return job
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
