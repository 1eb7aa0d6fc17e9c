"""The reconcile chain: how a job submitted to Slurm finishes with nothing waiting on a
login node.

``shardflow submit`` starts the first slot arrays and a small follow-up job that runs
``python -m shardflow.coordinator.chain --state URL --job ID`` after them
(``--dependency=afterany``). Each link runs one :func:`step`: reconcile, then either
aggregate (every task final), or start slots for the work left and submit the next link
after them. A link that finds nothing to wait for (a paused job, or retries in backoff)
waits a little and submits the next link without a dependency.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from shardflow.coordinator.drive import finish
from shardflow.coordinator.reconcile import next_retry_at
from shardflow.coordinator.round import (
    FOLLOWUP_GROUP,
    ROUND_ENDED,
    ROUND_MAP_DONE,
    run_round,
    slot_handles,
)
from shardflow.coordinator.services import Services, open_services
from shardflow.errors import CorruptResultError, TasksNotFinalError
from shardflow.models import JobStatus, Phase, TaskGroup
from shardflow.statestore.base import update_job

log = logging.getLogger("shardflow.chain")

FOLLOWUP = FOLLOWUP_GROUP


def config_pin(job_config: Mapping[str, Any]) -> str:
    """The SHA-256 of what a link runs from the job item: the job file's config (with
    ``slurm.setup``, ``slurm.python`` and the extra sbatch lines that go into scripts),
    its base folder and the workspace."""
    pinned = {k: job_config.get(k) for k in ("config", "base_dir", "workspace")}
    return hashlib.sha256(orjson.dumps(pinned, option=orjson.OPT_SORT_KEYS)).hexdigest()


def chain_argv(state_url: str, job_id: str, pin: str) -> list[str]:
    """The link's command line. ``pin`` (:func:`config_pin` of the submitted config) is
    in the batch script, which the submitter's Slurm account owns: workers and the
    dashboard may write the job item, never this."""
    return [
        sys.executable,
        "-m",
        "shardflow.coordinator.chain",
        "--state",
        state_url,
        "--job",
        job_id,
        "--config-sha256",
        pin,
    ]


__all__ = ["chain_argv", "config_pin", "slot_handles", "step", "submit_next"]


def submit_next(svc: Services, job_id: str, after: list[str], pin: str) -> str | None:
    """Queue the next link of the chain after ``after`` (Slurm only), pinned to ``pin``."""
    from shardflow.executors.slurm import SlurmExecutor

    if not isinstance(svc.executor, SlurmExecutor):
        return None
    handle = svc.executor.submit_followup(job_id, chain_argv(svc.state.url, job_id, pin), after)
    groups = svc.state.list_task_groups(job_id)
    svc.state.put_task_group(
        TaskGroup(
            job_id, f"r{len(groups) + 1:03d}", len(groups) + 1, 1, FOLLOWUP, (handle,), svc.clock()
        )
    )
    return handle


def step(
    svc: Services, job_id: str, pin: str, *, sleep: Callable[[float], None] = time.sleep
) -> str:
    """One link: returns what it did (``finished``, ``chained``, ``waited``, ``failed`` or
    ``done``). The next link is pinned to ``pin``, as this one was."""
    state = svc.state
    job = state.get_job(job_id)
    if job is None or job.status.is_final or job.cancel_requested:
        return "done"
    result = run_round(svc, job_id)
    if result.outcome == ROUND_MAP_DONE:
        try:
            finish(svc, job_id)
            return "finished"
        except (CorruptResultError, TasksNotFinalError) as exc:
            log.error("%s; running those tasks again", exc)
            update_job(state, job_id, now=svc.clock(), status=JobStatus.RUNNING, phase=Phase.MAP)
            result = run_round(svc, job_id)
    if result.outcome == ROUND_ENDED:
        return "failed" if result.job.status is JobStatus.FAILED else "done"
    if result.alive:
        submit_next(svc, job_id, result.alive, pin)
        return "chained"
    due = next_retry_at(state, job_id)
    wait = 60.0 if due is None else max(1.0, min(60.0, due - svc.clock()))
    sleep(wait)
    submit_next(svc, job_id, [], pin)
    return "waited"


def main(argv: list[str] | None = None) -> int:
    from shardflow.backends import AwsOptions, open_state_store
    from shardflow.config import config_from_snapshot
    from shardflow.observability.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m shardflow.coordinator.chain")
    parser.add_argument("--state", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--region", default=None)
    parser.add_argument("--config-sha256", default=None, help="the pin chain_argv wrote")
    args = parser.parse_args(argv)
    configure_logging("INFO", json=True)
    state = open_state_store(args.state, AwsOptions(args.endpoint_url, args.region))
    job = state.get_job(args.job)
    if job is None:
        log.error("job %s not found in %s", args.job, args.state)
        return 2
    found = config_pin(job.config)
    if args.config_sha256 is None or not hmac.compare_digest(found, args.config_sha256):
        # the config in the job item is not the one submitted: running it would run
        # whatever a writer of the item planted (slurm.setup lines, an interpreter)
        reason = (
            "the job's config in the state store is not the one submitted (SHA-256 "
            f"{found[:12]}…, pinned {str(args.config_sha256)[:12]}…): refusing to run it"
        )
        log.error("job %s: %s", args.job, reason)
        if not job.status.is_final:
            update_job(state, args.job, now=time.time(), status=JobStatus.FAILED, message=reason)
        return 2
    cfg = config_from_snapshot(job.config["config"])
    svc = open_services(cfg, Path(str(job.config.get("workspace", ".shardflow"))))
    svc.state = state
    outcome = step(svc, args.job, found)
    log.info("reconcile step for %s: %s", args.job, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
