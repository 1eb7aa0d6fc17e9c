"""`shardflow status`, `shardflow jobs` and `shardflow logs`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import orjson

from shardflow.cli.common import fail, get_job_or_exit, job_summary, open_cli_state, state_option
from shardflow.cli.status_views import complete_job_ids
from shardflow.errors import ShardflowError
from shardflow.models import TaskStatus


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
        sample = f", e.g. {err['sample']}" if err["sample"] else ""
        lines.append(
            f"  errors   {err['class']}: {err['tasks']} task(s), {err['items']} item(s){sample}"
        )
    for lim in summary.get("limits", []):
        lines.append(
            f"  limit    {lim['name']}: {lim['rate']:g}/s burst {lim['burst']:g}, "
            f"{lim['tokens']:.0f} tokens, {lim['leased']:.0f} leased, "
            f"{lim['waiting_workers']} waiting" + (" (paused)" if lim["paused"] else "")
        )
    if summary["output_uri"]:
        lines.append(f"  output   {summary['output_uri']}")
    if summary["message"]:
        lines.append(f"  note     {summary['message']}")
    return "\n".join(lines)


def _full_summary(state: Any, job_id: str) -> dict[str, Any]:
    from shardflow.cli.status_views import errors_by_class, rate_limits

    job = get_job_or_exit(state, job_id)
    summary = job_summary(state, job)
    i = summary["items"]
    left = i["total"] - i["succeeded"] - i["failed"]
    rate = summary["items_per_second"]
    running = rate and left > 0 and not job.status.is_final
    summary["eta_seconds"] = round(left / rate, 1) if running else None
    summary["errors"] = errors_by_class(state, job_id, state.read_counters(job_id))
    summary["limits"] = rate_limits(state, job_id)
    return summary


def _render_detail(d: dict[str, Any]) -> str:
    lines = []
    for g in d["task_groups"]:
        lines.append(
            f"  group    {g['group']} (round {g['round']}): {g['slots']} {g['executor']} slot(s) "
            + " ".join(g["handles"][:8])
        )
        states = g.get("slot_states") or {}
        if states:
            lines.append("           " + " ".join(f"{k}:{v}" for k, v in list(states.items())[:16]))
    for title, rows in (
        ("running", d["running"]),
        ("slowest", d["slowest"]),
        ("failing", d["failing"]),
    ):
        for r in rows:
            took = f"{r['seconds']:.1f}s" if r["seconds"] is not None else "-"
            err = f"  {r['error_class']}: {r['error']}" if r["error"] else ""
            lines.append(f"  {title:<8} {r['task_id']} attempt {r['attempt']} {took}{err}")
    return "\n".join(lines)


def _render_tasks(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no tasks match"
    out = [f"{'TASK':<10} {'STATUS':<11} {'ATT':>3} {'SECONDS':>8}  OWNER / ERROR"]
    for r in rows:
        took = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        note = r["error"] or r["owner"] or ""
        out.append(f"{r['task_id']:<10} {r['status']:<11} {r['attempt']:>3} {took:>8}  {note}")
    return "\n".join(out)


@click.command()
@click.argument("job_id", required=False, shell_complete=complete_job_ids)
@state_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object (for scripts).")
@click.option("--watch", is_flag=True, help="Refresh every 2 s until Ctrl-C (the job goes on).")
@click.option("--detail", is_flag=True, help="Task groups, running, slowest and failing tasks.")
@click.option(
    "--state",
    "task_state",
    type=click.Choice([s.value for s in TaskStatus], case_sensitive=False),
    help="List the tasks in this state instead of the summary.",
)
@click.option("--since", default=None, help="With --state: only tasks changed in the last 10m, 2h…")
@click.option("--limit", default=50, show_default=True, help="With --state: at most this many.")
def status(
    job_id: str | None,
    state_url: str | None,
    as_json: bool,
    watch: bool,
    detail: bool,
    task_state: str | None,
    since: str | None,
    limit: int,
) -> None:
    """Show a job's progress, or list recent jobs when no JOB_ID is given.

    \b
    Example:
      shardflow status                       # recent jobs
      shardflow status enrich-20260425-1200-ab12 --detail
      shardflow status enrich-20260425-1200-ab12 --state failed --since 1h --json
    The summary reads counters only, so it stays fast on jobs of any size.
    """
    from shardflow.cli.status_views import detail as detail_view
    from shardflow.cli.status_views import parse_since, task_row, tasks_in

    state = open_cli_state(state_url)
    if job_id is None:
        _list_jobs(state, as_json)
        return
    if task_state is not None:
        get_job_or_exit(state, job_id)
        now = time.time()
        try:
            cutoff = parse_since(since, now)
        except ValueError as exc:
            fail(str(exc))
        tasks = tasks_in(state, job_id, TaskStatus(task_state.upper()), limit=limit, since=cutoff)
        rows = [task_row(t, now) for t in tasks]
        click.echo(orjson.dumps(rows).decode() if as_json else _render_tasks(rows))
        return
    while True:
        summary = _full_summary(state, job_id)
        if detail:
            summary["detail"] = detail_view(state, job_id)
        if as_json:
            click.echo(orjson.dumps(summary).decode())
        else:
            if watch:
                click.clear()
            click.echo(_render(summary))
            if detail:
                click.echo(_render_detail(summary["detail"]))
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
@click.argument("job_id", shell_complete=complete_job_ids)
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
    try:
        validate_id(task_id, "task id")
    except ShardflowError as exc:
        fail(str(exc))
    task = state.get_task(job.job_id, task_id)
    if task is None:
        fail(f"task {task_id} not found in job {job_id}")
    for attempt in range(task.attempt, 0, -1):
        path = paths.log_file(job.job_id, task_id, attempt)
        if path.exists():
            click.echo(path.read_text(encoding="utf-8"), nl=False)
            return
    text = _remote_log(job, task_id, task.attempt)
    if text is not None:
        click.echo(text, nl=False)
        return
    if task.attempt == 0:
        fail(f"no log for {task_id}: it has not run yet", code=1)
    level = str(job.config.get("config", {}).get("logging", {}).get("level", "INFO"))
    click.echo(
        f"{task_id} logged nothing at {level} or above in its {task.attempt} attempt(s); it is "
        f"{task.status.value}. A task's log file is written only when something is logged "
        "(run with --set logging.level=DEBUG to log every attempt's steps)."
    )


def _remote_log(job: Any, task_id: str, attempts: int) -> str | None:
    """A task log uploaded beside the results (workers on other nodes, S3 storage)."""
    from shardflow.backends import open_object_store
    from shardflow.config import config_from_snapshot
    from shardflow.coordinator.specs import aws_options
    from shardflow.layout import Layout

    cfg = config_from_snapshot(job.config["config"])
    store = open_object_store(cfg.backends.storage, aws_options(cfg))
    layout = Layout(job.job_id)
    for attempt in range(attempts, 0, -1):
        key = layout.task_log(task_id, attempt)
        if store.head(key) is not None:
            return store.get_bytes(key).decode("utf-8", errors="replace")
    return None
