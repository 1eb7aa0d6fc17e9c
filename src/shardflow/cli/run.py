"""`shardflow run` and `shardflow submit`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from shardflow.cli.common import fail, job_summary, load_config_or_exit
from shardflow.errors import (
    ConfigError,
    InputError,
    InvalidIdError,
    NotFoundError,
    ShardflowError,
    UsageError,
)

job_file_arg = click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key by dotted path.",
)
job_id_option = click.option("--job-id", default=None, help="Job id; the same id resumes that job.")


def _prepare(job_file: Path, sets: Sequence[str], log_stream: Any = None) -> tuple[Any, Any]:
    from shardflow.backends import local_workspace
    from shardflow.coordinator.services import open_services
    from shardflow.observability.logging import configure_logging

    loaded = load_config_or_exit(job_file, sets)
    configure_logging(loaded.config.logging.level, log_stream)
    workspace = local_workspace(loaded.config.backends.state, Path(".shardflow"))
    workspace.mkdir(parents=True, exist_ok=True)
    try:
        svc = open_services(loaded.config, workspace)
        svc.executor.preflight()
    except ShardflowError as exc:
        fail(str(exc))
    return loaded, svc


def _submit(loaded: Any, svc: Any, job_id: str | None, *, start: bool, chain: bool) -> Any:
    """Submit. With ``start`` (``run``; ``submit`` on Slurm) the first worker slots start
    as soon as the first tasks are dispatched, while the split goes on; with ``chain``
    (``submit`` on Slurm, where nothing drives the job) the reconcile chain is queued
    after them."""
    from shardflow.coordinator.specs import slot_count
    from shardflow.coordinator.submit import submit_job

    def start_slots(job: Any, tasks: int | None) -> None:
        from shardflow.coordinator.round import start_group

        if svc.state.list_task_groups(job.job_id):
            return  # resumed: the rounds keep the slots
        handles = start_group(svc, job, 1, slot_count(loaded.config, tasks or 1 << 30))
        if chain:
            from shardflow.coordinator.chain import config_pin, submit_next
            from shardflow.coordinator.submit import job_snapshot

            # pinned to what this command submitted, not to what the store says now
            pin = config_pin(job_snapshot(loaded, svc.workspace))
            submit_next(svc, job.job_id, handles, pin)

    try:
        return submit_job(
            loaded,
            job_id=job_id,
            state=svc.state,
            store=svc.store,
            queue_for=svc.queue,
            workspace=svc.workspace,
            on_dispatch=start_slots if start else None,
        )
    except (UsageError, InputError, InvalidIdError, ConfigError) as exc:
        fail(str(exc))


@click.command()
@job_file_arg
@set_option
@job_id_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
def run(job_file: Path, sets: tuple[str, ...], job_id: str | None, as_json: bool) -> None:
    """Submit JOB_FILE and drive the job to the end; print where the output is.

    \b
    Example:
      shardflow run examples/quickstart/job.yaml
      shardflow run job.yaml --set resources.slots=8 --job-id nightly-0425
    Exit codes: 0 succeeded, 1 failed (failures above the tolerated threshold),
    2 usage or config error, 130 interrupted (run again with the same --job-id to resume).
    """
    from shardflow.cli.progress import ProgressView
    from shardflow.coordinator.drive import drive

    view = ProgressView()
    loaded, svc = _prepare(job_file, sets, view.log_stream)
    submission = _submit(loaded, svc, job_id, start=True, chain=False)
    job_id = submission.job.job_id
    click.echo(f"job {job_id}: {submission.job.total_tasks} tasks", err=True)
    try:
        job = drive(svc, job_id, on_progress=view)
    except NotFoundError as exc:
        view.close()
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        view.close()
        click.echo(
            f"interrupted; resume with: shardflow run {job_file} --job-id {job_id}", err=True
        )
        sys.exit(130)
    finally:
        view.close()
    summary = job_summary(svc.state, job)
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        _print_result(summary)
    sys.exit(0 if job.status.value == "SUCCEEDED" else 1)


def _print_result(s: dict[str, Any]) -> None:
    items = s["items"]
    click.echo(
        f"job {s['job_id']} {s['status']}: {s['rows']} rows from {items['succeeded']} items; "
        f"{items['failed']} failed, {items['rejected']} rejected, in {s['elapsed_seconds']:.1f}s"
    )
    if s["output_uri"]:
        click.echo(f"output: {s['output_uri']}")
    if s["message"]:
        click.echo(f"note: {s['message']}")


@click.command()
@job_file_arg
@set_option
@job_id_option
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def submit(
    job_file: Path, sets: tuple[str, ...], job_id: str | None, dry_run: bool, as_json: bool
) -> None:
    """Validate JOB_FILE, split the input, register and dispatch tasks, and return.

    \b
    Example:
      shardflow submit job.yaml --dry-run     # the plan, nothing written
      shardflow submit job.yaml --job-id enrich-0425
    With the local executor nothing runs until `shardflow run` (same --job-id) drives it;
    on Slurm the arrays and their reconcile chain run on their own.
    """
    if dry_run:
        _dry_run(job_file, sets, as_json)
        return
    loaded, svc = _prepare(job_file, sets)
    on_slurm = loaded.config.backends.executor == "slurm"
    submission = _submit(loaded, svc, job_id, start=on_slurm, chain=on_slurm)
    job = submission.job
    summary = job_summary(svc.state, job)
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        click.echo(
            f"submitted job {job.job_id}: {job.total_tasks} tasks, {job.total_items} items "
            f"({'new' if submission.created else 'resumed'})"
        )
        click.echo(f"follow it with: shardflow status {job.job_id}")


def _sbatch_plan(cfg: Any, slots: int) -> list[dict[str, str]]:
    """The exact sbatch scripts `submit` would write (nothing is written or submitted)."""
    from shardflow.backends import local_workspace
    from shardflow.executors.base import SlotSpec
    from shardflow.executors.local import worker_argv
    from shardflow.executors.slurm import slurm_executor_from_config

    workspace = local_workspace(cfg.backends.state, Path(".shardflow"))
    executor = slurm_executor_from_config(cfg, workspace)
    argv = worker_argv(cfg.backends.state, "job-id", workspace)
    planned = executor.plan_slots(SlotSpec("job-id", "g001", slots, argv))
    return [{"path": str(path), "script": text} for path, text in planned]


def _dry_run(job_file: Path, sets: Sequence[str], as_json: bool) -> None:
    from shardflow.coordinator.specs import slot_count, split_spec
    from shardflow.split.plan import plan_summary

    loaded = load_config_or_exit(job_file, sets)
    cfg = loaded.config
    try:
        summary = plan_summary(split_spec(cfg))
    except ShardflowError as exc:
        fail(str(exc))
    tasks = int(summary.get("batches", 0))
    plan = {
        "name": cfg.name,
        "handler": cfg.handler,
        "inputs": summary.get("inputs"),
        "plan": summary,
        "tasks": tasks,
        "slots": slot_count(cfg, max(tasks, 1)),
        "backends": cfg.backends.model_dump(mode="json"),
        "sample_task": summary.get("sample_batch"),
    }
    if cfg.backends.executor == "slurm":
        plan["sbatch_scripts"] = _sbatch_plan(cfg, slot_count(cfg, max(tasks, 1)))
    if as_json:
        click.echo(orjson.dumps(plan, default=str).decode())
        return
    click.echo(orjson.dumps(plan, default=str, option=orjson.OPT_INDENT_2).decode())
