"""`shardflow limit set JOB NAME RATE [--burst N]` and `shardflow limit show JOB`."""

from __future__ import annotations

import dataclasses
import time

import click
import orjson

from shardflow.cli.common import fail, get_job_or_exit, open_cli_state, state_option
from shardflow.errors import ShardflowError, UsageError

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


def format_rate(rate: float) -> str:
    """``50/s``, ``30/min`` or ``2/h``: the largest unit that keeps the number at least 1."""
    if rate >= 1:
        return f"{rate:.4g}/s"
    if rate * 60 >= 1:
        return f"{rate * 60:.4g}/min"
    return f"{rate * 3600:.4g}/h"


@click.group()
def limit() -> None:
    """Show or change a job's rate limits while it runs.

    \b
    Example:
      shardflow limit show enrich-20260425-1200-ab12
      shardflow limit set enrich-20260425-1200-ab12 geo_api 20/s --burst 40
    """


@limit.command("set")
@click.argument("job_id")
@click.argument("name")
@click.argument("rate")
@click.option("--burst", type=click.IntRange(min=1), default=None, help="New bucket size.")
@state_option
@json_option
def set_command(
    job_id: str, name: str, rate: str, burst: int | None, state_url: str | None, as_json: bool
) -> None:
    """Set limit NAME of JOB_ID to RATE (50/s, 3000/min, 10/h); workers follow within
    one lease period (5 s). The change survives a re-submit of the job and is recorded
    in the job's events and in the audit log (`shardflow audit show`).

    \b
    Example:
      shardflow limit set enrich-20260425-1200-ab12 geo_api 3000/min --burst 100
    """
    from shardflow.configtypes import parse_rate
    from shardflow.coordinator.submit import actor
    from shardflow.ratelimit.bucket import LEASE_PERIOD
    from shardflow.ratelimit.control import bucket_key, set_limit

    try:
        per_second = parse_rate(rate)
    except ValueError as exc:
        fail(str(exc))
    state = open_cli_state(state_url)
    get_job_or_exit(state, job_id)
    try:
        before = state.get_bucket(bucket_key(job_id, name))
        after = set_limit(
            state,
            job_id,
            name,
            rate=per_second,
            burst=None if burst is None else float(burst),
            now=time.time(),
            actor=f"cli:{actor()}",
        )
    except (UsageError, ValueError) as exc:
        fail(str(exc))
    except ShardflowError as exc:
        fail(str(exc), code=1)
    if as_json:
        row = {"job_id": job_id, "name": name, "rate": after.rate, "burst": after.burst}
        click.echo(orjson.dumps(row).decode())
        return
    was = "" if before is None else f" (was {format_rate(before.rate)}, burst {before.burst:g})"
    click.echo(
        f"{job_id} {name}: rate {format_rate(after.rate)}, burst {after.burst:g}{was}; "
        f"workers follow within {LEASE_PERIOD:g}s"
    )


@limit.command("show")
@click.argument("job_id")
@state_option
@json_option
def show(job_id: str, state_url: str | None, as_json: bool) -> None:
    """Show each rate limit of JOB_ID: rate, burst, tokens in the bucket, tokens held by
    workers, paused, and workers waiting for tokens.

    \b
    Example:
      shardflow limit show enrich-20260425-1200-ab12 --json
    """
    from shardflow.ratelimit.control import limit_usage

    state = open_cli_state(state_url)
    get_job_or_exit(state, job_id)
    try:
        usage = limit_usage(state, job_id)
    except ShardflowError as exc:
        fail(str(exc), code=1)
    if as_json:
        rows = [dataclasses.asdict(u) for u in usage]
        click.echo(orjson.dumps({"job_id": job_id, "limits": rows}).decode())
        return
    if not usage:
        click.echo(f"{job_id} has no rate limits")
        return
    click.echo(f"{'limit':<20} {'rate':>10} {'burst':>7} {'tokens':>8} {'leased':>8}  waiting")
    for u in usage:
        click.echo(
            f"{u.name:<20} {format_rate(u.rate):>10} {u.burst:>7g} {u.tokens:>8.1f} "
            f"{u.leased:>8.1f}  {u.waiting_workers}{'  (paused)' if u.paused else ''}"
        )
