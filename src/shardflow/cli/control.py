"""`shardflow pause | resume | retry | cancel | purge | recover JOB`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from shardflow.cli.common import fail, get_job_or_exit, job_summary, open_cli_state, state_option
from shardflow.cli.status_views import complete_job_ids
from shardflow.errors import ShardflowError, UsageError

job_arg = click.argument("job_id", shell_complete=complete_job_ids)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def _services(state_url: str | None, job_id: str) -> Any:
    from shardflow.config import config_from_snapshot
    from shardflow.coordinator.services import open_services

    state = open_cli_state(state_url)
    job = get_job_or_exit(state, job_id)
    cfg = config_from_snapshot(job.config["config"])
    workspace = Path(str(job.config.get("workspace", ".shardflow")))
    svc = open_services(cfg, workspace)
    svc.state = state
    return svc


def _actor() -> str:
    from shardflow.coordinator.submit import actor

    return f"cli:{actor()}"


def _report(result: Any, as_json: bool, done: str, unchanged: str) -> None:
    if as_json:
        click.echo(
            orjson.dumps(
                {"job_id": result.job.job_id, "changed": result.changed, "detail": result.detail},
                default=str,
            ).decode()
        )
    else:
        click.echo(done if result.changed else unchanged)


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except UsageError as exc:
        fail(str(exc))
    except ShardflowError as exc:
        fail(str(exc), code=1)


@click.command()
@job_arg
@state_option
@json_option
def pause(job_id: str, state_url: str | None, as_json: bool) -> None:
    """Stop new leases and rate-limit tokens for JOB_ID; running items finish.

    \b
    Example:
      shardflow pause enrich-20260425-1200-ab12
    """
    from shardflow.coordinator.control import set_paused

    state = open_cli_state(state_url)
    get_job_or_exit(state, job_id)
    result = _guard(lambda: set_paused(state, job_id, True, actor=_actor(), now=time.time()))
    _report(result, as_json, f"paused {job_id}", f"{job_id} was already paused")


@click.command()
@job_arg
@state_option
@json_option
def resume(job_id: str, state_url: str | None, as_json: bool) -> None:
    """Resume a paused job (drive it again with `shardflow run … --job-id JOB_ID`).

    \b
    Example:
      shardflow resume enrich-20260425-1200-ab12
    """
    from shardflow.coordinator.control import set_paused

    state = open_cli_state(state_url)
    get_job_or_exit(state, job_id)
    result = _guard(lambda: set_paused(state, job_id, False, actor=_actor(), now=time.time()))
    _report(result, as_json, f"resumed {job_id}", f"{job_id} was not paused")


@click.command()
@job_arg
@state_option
@json_option
def cancel(job_id: str, state_url: str | None, as_json: bool) -> None:
    """Cancel JOB_ID: stop its slots, cancel its unfinished tasks, keep what finished.

    \b
    Example:
      shardflow cancel enrich-20260425-1200-ab12
    """
    from shardflow.coordinator.control import cancel_job

    svc = _services(state_url, job_id)
    result = _guard(lambda: cancel_job(svc, job_id, actor=_actor(), now=time.time))
    _report(result, as_json, f"cancelled {job_id}", f"{job_id} was already cancelled")


@click.command()
@job_arg
@state_option
@click.option(
    "--class",
    "classes",
    multiple=True,
    type=click.Choice(["transient", "permanent", "infrastructure", "unknown"]),
    help="Only tasks that failed with this error class (repeatable).",
)
@click.option("--no-wait", is_flag=True, help="Re-queue and return; do not drive the job.")
@json_option
def retry(
    job_id: str, state_url: str | None, classes: tuple[str, ...], no_wait: bool, as_json: bool
) -> None:
    """Re-drive JOB_ID's failed tasks with fresh attempts, then finish the job again.

    \b
    Example:
      shardflow retry enrich-20260425-1200-ab12 --class infrastructure
    """
    from shardflow.coordinator.control import retry_failed
    from shardflow.coordinator.drive import drive
    from shardflow.models import ErrorClass

    svc = _services(state_url, job_id)
    picked = [ErrorClass(c) for c in classes]
    result = _guard(
        lambda: retry_failed(svc, job_id, actor=_actor(), now=time.time, classes=picked)
    )
    if not result.changed:
        _report(result, as_json, "", f"{job_id}: no failed tasks to retry")
        return
    if no_wait or svc.cfg.backends.executor != "local":
        _report(result, as_json, f"re-queued {result.detail['tasks']} task(s) of {job_id}", "")
        return
    from shardflow.observability.logging import configure_logging

    configure_logging(svc.cfg.logging.level)
    job = drive(svc, job_id)
    summary = job_summary(svc.state, job)
    click.echo(orjson.dumps(summary).decode() if as_json else f"job {job_id} {job.status.value}")
    sys.exit(0 if job.status.value == "SUCCEEDED" else 1)


@click.command()
@job_arg
@state_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Purge even while slots run (they are stopped).")
@json_option
def purge(job_id: str, state_url: str | None, yes: bool, force: bool, as_json: bool) -> None:
    """Delete every object, message and state row of JOB_ID, and its local logs.

    \b
    Example:
      shardflow purge enrich-20260425-1200-ab12 --yes
    """
    from shardflow.coordinator.control import purge_job

    svc = _services(state_url, job_id)
    if not yes and not click.confirm(f"Delete job {job_id} and all its data?", default=False):
        fail("purge aborted: nothing was deleted", code=2)
    result = _guard(lambda: purge_job(svc, job_id, actor=_actor(), now=time.time, force=force))
    _report(result, as_json, f"purged {job_id} ({result.detail['objects']} objects)", "")


@click.command()
@job_arg
@state_option
@json_option
def recover(job_id: str, state_url: str | None, as_json: bool) -> None:
    """Re-drive a stuck JOB_ID (expired leases, lost messages, dead slots); say what was done.

    \b
    Example:
      shardflow recover enrich-20260425-1200-ab12
    """
    from shardflow.coordinator.control import recover_job

    svc = _services(state_url, job_id)
    result = _guard(lambda: recover_job(svc, job_id, actor=_actor(), now=time.time))
    if as_json:
        _report(result, True, "", "")
        return
    d = result.detail
    click.echo(
        f"{job_id}: {len(d['expired_leases'])} expired lease(s) re-queued, "
        f"{len(d['resent'])} message(s) re-sent, {len(d['failed'])} task(s) failed for good, "
        f"swept {d['swept']}; {d['slots_alive']} slot(s) alive"
    )
    if not result.changed:
        click.echo("nothing was stuck")
