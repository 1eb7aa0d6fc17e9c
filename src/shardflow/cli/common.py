"""What every command shares: loading config, opening the state store, job summaries."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from shardflow.errors import ConfigError, ShardflowError

if TYPE_CHECKING:
    from shardflow.config import LoadedConfig
    from shardflow.models import Job
    from shardflow.statestore.base import StateStore

DEFAULT_STATE = ".shardflow/state.db"

state_option = click.option(
    "--state-url",
    "state_url",
    envvar="SHARDFLOW_STATE",
    default=None,
    help="State store URL (default: .shardflow/state.db here; env SHARDFLOW_STATE).",
)


def fail(message: str, code: int = 2, hint: str | None = None) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def load_config_or_exit(path: Path, sets: Sequence[str]) -> LoadedConfig:
    """The job file, validated, with no credentials in it (they are refused before any
    backend is opened or anything is printed); exit 2 with every problem otherwise."""
    from shardflow.config import load_job_config
    from shardflow.security.redact import check_no_embedded_credentials

    try:
        loaded = load_job_config(path, list(sets))
        check_no_embedded_credentials(loaded.config.model_dump(mode="json"))
        return loaded
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"hint: fix the {len(exc.problems)} problem(s) above, then re-run", err=True)
        sys.exit(2)


def open_cli_state(state_url: str | None) -> StateStore:
    from shardflow.backends import AwsOptions, open_state_store

    url = state_url or DEFAULT_STATE
    if "://" not in url and not Path(url).exists():
        fail(
            f"no shardflow state at {url}",
            hint="run this from the folder where you ran `shardflow run`, or pass --state-url URL",
        )
    try:
        return open_state_store(
            url,
            AwsOptions(
                os.environ.get("SHARDFLOW_ENDPOINT_URL"), os.environ.get("SHARDFLOW_REGION")
            ),
        )
    except ShardflowError as exc:
        fail(str(exc))


def get_job_or_exit(state: StateStore, job_id: str) -> Job:
    from shardflow.layout import validate_id

    try:
        validate_id(job_id, "job id")
    except ShardflowError as exc:
        fail(str(exc))
    job = state.get_job(job_id)
    if job is None:
        fail(f"job {job_id} not found", hint="`shardflow jobs` lists the jobs in this state store")
    return job


def job_summary(state: StateStore, job: Job, now: float | None = None) -> dict[str, Any]:
    """The JSON shape of `run --json` and `status --json`."""
    from shardflow.statestore.base import task_counts

    counters = state.read_counters(job.job_id)
    split = dict(job.config.get("split") or {})
    rejected = int(split.get("rejected", 0)) + int(counters.get("items.rejected", 0))
    now = now or time.time()
    end = job.updated_at if job.status.is_final else now
    processed = int(counters.get("items.succeeded", 0)) + int(counters.get("items.failed", 0))
    elapsed = max(0.0, end - job.created_at)
    return {
        "job_id": job.job_id,
        "name": job.name,
        "status": job.status.value,
        "phase": job.phase.value,
        "paused": job.paused,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "elapsed_seconds": round(elapsed, 3),
        "tasks": {s.value: n for s, n in task_counts(counters).items()}
        | {"total": job.total_tasks},
        "items": {
            "total": job.total_items,
            "succeeded": int(counters.get("items.succeeded", 0)),
            "failed": int(counters.get("items.failed", 0)),
            "rejected": rejected,
            "duplicates": int(split.get("duplicates", 0)),
        },
        "rows": int(counters.get("rows", 0)),
        "attempts": int(counters.get("attempts", 0)),
        "items_per_second": round(processed / elapsed, 1) if elapsed > 0 else 0.0,
        "output_uri": job.output_uri,
        "message": job.message,
    }
