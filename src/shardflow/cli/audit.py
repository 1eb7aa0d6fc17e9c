"""`shardflow audit verify` and `shardflow audit show`: the tamper-evident audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from shardflow.cli.common import fail
from shardflow.errors import ShardflowError

if TYPE_CHECKING:
    from shardflow.objectstore.base import ObjectStore

DEFAULT_STORAGE = ".shardflow/store"

storage_option = click.option(
    "--storage",
    "storage_url",
    envvar="SHARDFLOW_STORAGE",
    default=None,
    help="Object store holding the log: a path, file:///abs or s3://bucket/prefix "
    "(default: .shardflow/store here; env SHARDFLOW_STORAGE).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def open_audit_store(storage_url: str | None) -> ObjectStore:
    """The store named on the command line; exits 2 if a local one does not exist (it
    is never created here: a typo must not look like an empty, valid log)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from shardflow.backends import AwsOptions, open_object_store

    url = storage_url or DEFAULT_STORAGE
    if "://" not in url or url.startswith("file:"):
        local = Path(url2pathname(urlparse(url).path)) if "://" in url else Path(url)
        if not local.is_dir():
            fail(
                f"no shardflow store at {url}",
                hint="run this where you ran `shardflow run`, or pass --storage URL",
            )
    aws = AwsOptions(os.environ.get("SHARDFLOW_ENDPOINT_URL"), os.environ.get("SHARDFLOW_REGION"))
    try:
        return open_object_store(url, aws)
    except ShardflowError as exc:
        fail(str(exc))


@click.group()
def audit() -> None:
    """Verify or show the audit log of job submissions, control commands and
    configuration changes (hash-chained, append-only; see docs/security.md).

    \b
    Example:
      shardflow audit verify
      shardflow audit show --job enrich-20260425-1200-ab12
    """


@audit.command("verify")
@storage_option
@click.option(
    "--head",
    "expect_head",
    default=None,
    metavar="HASH",
    help="A head hash printed by an earlier verify: fail if it is no longer in the log.",
)
@json_option
def verify_command(storage_url: str | None, expect_head: str | None, as_json: bool) -> None:
    """Check every entry of the audit log and its chain; name the first bad entry.

    Exit codes: 0 the log is intact, 1 it was tampered with (the first entry that
    cannot be trusted is printed), 2 usage error. Keep the printed head hash somewhere
    else and pass it back with --head: that also catches entries cut from the end.

    \b
    Example:
      shardflow audit verify --storage s3://my-bucket/shardflow
    """
    from shardflow.security.audit import audit_key, entry_key, verify

    store = open_audit_store(storage_url)
    try:
        hmac_key = audit_key()
    except ShardflowError as exc:
        fail(str(exc))
    try:
        result = verify(store, expect_head=expect_head, key=hmac_key)
    except ShardflowError as exc:
        fail(str(exc), code=1)
    if as_json:
        fields = ("ok", "entries", "first_bad_seq", "reason", "head")
        click.echo(json.dumps({name: getattr(result, name) for name in fields}))
    elif result.ok:
        keyed = "keyed (HMAC), " if hmac_key is not None else ""
        click.echo(f"audit log intact: {keyed}{result.entries} entries, head {result.head}")
    else:
        click.echo(f"audit log TAMPERED: {result.reason}")
        click.echo(f"{result.entries} entries verified before it, up to head {result.head}")
        if result.first_bad_seq is not None:
            key = entry_key(result.first_bad_seq)
            click.echo(f"first bad entry: {result.first_bad_seq} ({store.uri(key)})")
            if store.head(key) is not None:
                click.echo(store.get_bytes(key).decode("utf-8", errors="replace").rstrip())
    raise SystemExit(0 if result.ok else 1)


@audit.command("show")
@storage_option
@click.option("--job", "job_id", default=None, help="Only entries of this job.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the last N entries.")
@json_option
def show_command(
    storage_url: str | None, job_id: str | None, limit: int | None, as_json: bool
) -> None:
    """List audit log entries, oldest first (not verified: use `audit verify`).

    \b
    Example:
      shardflow audit show --job enrich-20260425-1200-ab12 --limit 20
    """
    from shardflow.layout import validate_id
    from shardflow.security.audit import read_entries

    if job_id is not None:
        try:
            validate_id(job_id, "job id")
        except ShardflowError as exc:
            fail(str(exc))
    store = open_audit_store(storage_url)
    entries = list(read_entries(store, job_id))
    if limit is not None:
        entries = entries[-limit:]
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False))
        return
    if not entries:
        click.echo("no audit entries" + (f" for job {job_id}" if job_id else ""))
    for entry in entries:
        click.echo(_line(entry))


def _line(entry: dict[str, Any]) -> str:
    if "unreadable" in entry:
        return f"{entry['seq']:>6}  (unreadable: {entry['unreadable']})"
    detail = json.dumps(entry.get("detail") or {}, sort_keys=True, ensure_ascii=False)
    return (
        f"{entry.get('seq', '?'):>6}  {entry.get('at', '?')}  {entry.get('actor', '?')}  "
        f"{entry.get('action', '?')}  {entry.get('job_id') or '-'}  {detail}"
    )
