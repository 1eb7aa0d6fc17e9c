"""``shardflow doctor``: check the AWS resources a job's backends name.

boto3 is imported only when the command runs, never when the CLI starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from shardflow.cli.common import fail, load_config_or_exit
from shardflow.errors import ShardflowError


@click.command()
@click.argument("job_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key.")
@click.option("--storage", default=None, help="Object store URL, e.g. s3://bucket/prefix.")
@click.option("--state", default=None, help="State store URL, e.g. dynamodb://table.")
@click.option("--queue", default=None, help="Queue URL, e.g. sqs://prefix.")
@click.option(
    "--endpoint-url",
    envvar="SHARDFLOW_ENDPOINT_URL",
    default=None,
    help="AWS endpoint override (an emulator); env SHARDFLOW_ENDPOINT_URL.",
)
@click.option("--region", envvar="SHARDFLOW_REGION", default=None, help="AWS region.")
@click.option(
    "--create", is_flag=True, help="Create a missing bucket or table (encrypted, private)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def doctor(
    job_file: Path | None,
    sets: tuple[str, ...],
    storage: str | None,
    state: str | None,
    queue: str | None,
    endpoint_url: str | None,
    region: str | None,
    create: bool,
    as_json: bool,
) -> None:
    """Check that the bucket, table and queues of JOB_FILE's backends (or of the URLs
    given) exist, are encrypted and are not public; say what is missing and how to
    create it. Exits 0 when every check passes, 1 otherwise, 2 for usage errors.

    \b
    Example:
      shardflow doctor job.yaml
      shardflow doctor --storage s3://my-bucket/shardflow --state dynamodb://shardflow \\
                       --queue sqs://shardflow --region eu-west-1
    """
    kms_key_id = None
    if job_file is not None:
        backends = load_config_or_exit(job_file, sets).config.backends
        storage = storage or backends.storage
        state = state or backends.state
        queue = queue or backends.queue
        endpoint_url = endpoint_url or backends.endpoint_url
        region = region or backends.region
        kms_key_id = backends.kms_key_id
    if not (storage or state or queue):
        fail("nothing to check", hint="give a job file, or --storage/--state/--queue URLs")

    from shardflow.doctor import run_checks

    try:
        results = run_checks(
            storage,
            state,
            queue,
            endpoint_url=endpoint_url,
            region=region,
            kms_key_id=kms_key_id,
            create=create,
        )
    except ShardflowError as exc:
        fail(str(exc))
    ok = all(r.ok for r in results)
    if as_json:
        rows = [{"name": r.name, "ok": r.ok, "detail": r.detail, "fix": r.fix} for r in results]
        click.echo(json.dumps({"ok": ok, "checks": rows}, indent=2))
    else:
        for r in results:
            click.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name}: {r.detail}")
            if r.fix:
                click.echo(f"      fix: {r.fix}")
    sys.exit(0 if ok else 1)
