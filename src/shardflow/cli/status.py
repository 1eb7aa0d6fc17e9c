"""`shardflow status`, `shardflow jobs` and `shardflow logs`."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import orjson

from shardflow.cli.common import fail, get_job_or_exit, job_summary, open_cli_state, state_option


def _errors(state: Any, job_id: str, limit: int = 5) -> list[dict[str, Any]]:
    from shardflow.models import TaskStatus

    tasks = state.list_tasks(job_id, TaskStatus.FAILED, limit=1000)
    tasks += state.list_tasks(job_id, TaskStatus.RETRY_WAIT, limit=1000)
    by_class: Counter[str] = Counter()
    sample: dict[str, str] = {}
    for t in tasks:
        cls = t.error_class.value if t.error_class else "unknown"
        by_class[cls] += 1
        sample.setdefault(cls, t.error_message or "")
    return [
        {"class": cls, "tasks": n, "sample": sample[cls][:300]}
        for cls, n in by_class.most_common(limit)
    ]


def _render(summary: dict[str, Any]) -> str:
    t, i = summary["tasks"], summary["items"]
    lines = [
        f"job {summary['job_id']}  ({summary['name']})",
        f"  status   {summary['status']}{' (paused)' if summary['paused'] else ''}"
        f"   phase {summary['phase']}",
        "  tasks    "
        + "  ".join(f"{k.lower()} {v}" for k, v in t.items() if v or k in ("SUCCEEDED", "total")),
        f"  items    {i['total']} total: {i['succeeded']} succeeded, {i['failed']} failed, "
        f"{i['rejected']} rejected ({i['duplicates']} duplicate keys)",
        f"  rows     {summary['rows']}   throughput {summary['items_per_second']:,.0f} items/s   "
        f"elapsed {summary['elapsed_seconds']:.1f}s"
        + (f"   ETA {summary['eta_seconds']:.0f}s" if summary.get("eta_seconds") else ""),
    ]
    for err in summary.get("errors", []):
        lines.append(f"  errors   {err['class']}: {err['tasks']} task(s), e.g. {err['sample']}")
    if summary["output_uri"]:
        lines.append(f"  output   {summary['output_uri']}")
    if summary["message"]:
        lines.append(f"  note     {summary['message']}")
    return "\n".join(lines)


def _full_summary(state: Any, job_id: str) -> dict[str, Any]:
    job = get_job_or_exit(state, job_id)
    summary = job_summary(state, job)
    i = summary["items"]
    left = i["total"] - i["succeeded"] - i["failed"]
    rate = summary["items_per_second"]
    summary["eta_seconds"] = (
        round(left / rate, 1) if rate and left > 0 and not job.status.is_final else None
    )
    summary["errors"] = _errors(state, job_id)
    return summary


@click.command()
@click.argument("job_id", required=False)
@state_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for scripts).")
@click.option("--watch", is_flag=True, help="Refresh every 2 s until Ctrl-C (the job goes on).")
def status(job_id: str | None, state_url: str | None, as_json: bool, watch: bool) -> None:
    """Show a job's progress, or list recent jobs when no JOB_ID is given.

    \b
    Example:
      shardflow status                       # recent jobs
      shardflow status enrich-20260425-1200-ab12 --json
    """
    state = open_cli_state(state_url)
    if job_id is None:
        _list_jobs(state, as_json)
        return
    while True:
        summary = _full_summary(state, job_id)
        if as_json:
            click.echo(orjson.dumps(summary).decode())
        else:
            if watch:
                click.clear()
            click.echo(_render(summary))
        if not watch or summary["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return
        try:
            time.sleep(2)
        except KeyboardInterrupt:
            return


def _list_jobs(state: Any, as_json: bool, limit: int = 20) -> None:
    jobs = state.list_jobs(limit)
    rows = [job_summary(state, j) for j in jobs]
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    if not rows:
        click.echo("no jobs yet: start one with `shardflow run JOB.yaml`")
        return
    click.echo(f"{'JOB':<44} {'STATUS':<12} {'TASKS':>13} {'ITEMS':>12}  CREATED")
    for r in rows:
        t = r["tasks"]
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))
        click.echo(
            f"{r['job_id']:<44} {r['status']:<12} {t['SUCCEEDED']:>6}/{t['total']:<6} "
            f"{r['items']['succeeded']:>12}  {created}"
        )


@click.command()
@state_option
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def jobs(state_url: str | None, limit: int, as_json: bool) -> None:
    """List recent jobs with their state.

    \b
    Example:
      shardflow jobs --limit 5
    """
    _list_jobs(open_cli_state(state_url), as_json, limit)


@click.command()
@click.argument("job_id")
@click.argument("task_id", required=False)
@state_option
def logs(job_id: str, task_id: str | None, state_url: str | None) -> None:
    """Show the worker log of a task (its latest attempt), or list a job's logs.

    \b
    Example:
      shardflow logs enrich-20260425-1200-ab12 t000003
    """
    from shardflow.layout import LocalPaths, validate_id

    state = open_cli_state(state_url)
    job = get_job_or_exit(state, job_id)
    workspace = Path(str(job.config.get("workspace", ".shardflow")))
    paths = LocalPaths(workspace, workspace / "scratch")
    log_dir = paths.job_log_dir(job.job_id)
    if task_id is None:
        files = sorted(log_dir.glob("*.log")) if log_dir.exists() else []
        for f in files:
            click.echo(f.name)
        if not files:
            click.echo("no logs yet")
        return
    validate_id(task_id, "task id")
    task = state.get_task(job.job_id, task_id)
    if task is None:
        fail(f"task {task_id} not found in job {job_id}")
    for attempt in range(task.attempt, 0, -1):
        path = paths.log_file(job.job_id, task_id, attempt)
        if path.exists():
            click.echo(path.read_text(encoding="utf-8"), nl=False)
            return
    fail(f"no log found for {task_id}", code=1, hint="the task may not have run yet")
