"""`shardflow watch`: evaluate the alert rules once or in a loop, and deliver alerts."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shardflow.cli.common import fail, get_job_or_exit, open_cli_state, state_option
from shardflow.cli.status_views import complete_job_ids

if TYPE_CHECKING:
    from shardflow.statestore.base import StateStore

STATE_FILE_NAME = "alerts-state.json"


@click.command()
@click.argument("job_id", required=False, shell_complete=complete_job_ids)
@state_option
@click.option("--once", is_flag=True, help="Run one pass and exit (for cron or a Slurm step).")
@click.option(
    "--interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1.0),
    help="Seconds between passes in a loop.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="alerts.yaml: rules, thresholds and channels (default: all rules, printed here).",
)
@click.option(
    "--alert-state",
    "alert_state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where open alerts are remembered (default: alerts-state.json in the workspace).",
)
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write Prometheus metrics here each pass (node exporter textfile collector).",
)
def watch(
    job_id: str | None,
    state_url: str | None,
    once: bool,
    interval: float,
    config_path: Path | None,
    alert_state: Path | None,
    textfile: Path | None,
) -> None:
    """Watch jobs (all recent ones, or JOB_ID) and alert when one needs attention.

    \b
    Example:
      shardflow watch --config alerts.yaml              # loop, a pass every 60 s
      shardflow watch JOB_ID --once --config alerts.yaml   # one pass (cron, Slurm step)
    Exit status with --once: 0 after a pass (alerts or not), 1 if a delivery failed,
    2 for a usage or config error.
    """
    from shardflow.alerts.channels import build_channels
    from shardflow.alerts.config import load_alerts_config
    from shardflow.alerts.runner import run_pass
    from shardflow.backends import local_workspace
    from shardflow.cli.common import DEFAULT_STATE
    from shardflow.errors import ConfigError

    try:
        cfg = load_alerts_config(config_path)
        channels = build_channels(cfg.channels, echo=click.echo)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(2)
    state = open_cli_state(state_url)
    job_ids = None
    workspace = local_workspace(state_url or DEFAULT_STATE, Path(".shardflow"))
    if job_id is not None:
        job = get_job_or_exit(state, job_id)
        job_ids = [job.job_id]
        workspace = Path(str(job.config.get("workspace", workspace)))
    path = alert_state or workspace / STATE_FILE_NAME
    try:
        while True:
            report = run_pass(
                state, cfg, channels, path, now=time.time(), job_ids=job_ids, workspace=workspace
            )
            if textfile is not None:
                _write_metrics(textfile, state, job_ids)
            stamp = time.strftime("%H:%M:%S")
            click.echo(f"{stamp} watch: {report.line()}", err=True)
            for failure in report.failures:
                click.echo(f"  delivery failed: {failure}", err=True)
            if once:
                sys.exit(1 if report.failures else 0)
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        state.close()


def _write_metrics(path: Path, state: StateStore, job_ids: list[str] | None) -> None:
    from shardflow.observability.metrics import write_textfile

    try:
        write_textfile(path, state, job_ids=job_ids)
    except OSError as exc:
        fail(f"cannot write metrics to {path}: {exc}", code=1)
