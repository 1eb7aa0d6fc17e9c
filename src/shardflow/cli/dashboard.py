"""`shardflow dashboard`: serve the web dashboard over a state store."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import click

from shardflow.cli.common import fail, open_cli_state, state_option

TOKEN_FILE_NAME = "dashboard-tokens.json"  # noqa: S105 (a file name, not a secret)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _announce_tokens(path: Path, plain: dict[str, str]) -> None:
    """Show new tokens once: on a terminal, printed; else (nohup, a log file that others
    may read) written to a 0600 file beside the token file, whose path is printed."""
    lines = [
        f"  operator (view and act): {plain['operator']}",
        f"  read-only (view):        {plain['readonly']}",
    ]
    if sys.stdout.isatty():
        click.echo(f"created {path} (mode 600). These tokens are shown only now:")
        click.echo("\n".join(lines))
    else:
        shown = path.with_name(path.name + ".new-tokens.txt")
        fd = os.open(shown, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        click.echo(
            f"created {path} (mode 600); the new tokens are in {shown} (mode 600): "
            "read them, then delete that file"
        )
    click.echo(f"to make new ones, delete {path} and start the dashboard again")


def default_token_file(state_url: str | None) -> Path:
    """``dashboard-tokens.json`` in the workspace beside a local state file (else in
    ``./.shardflow``)."""
    from shardflow.backends import local_workspace
    from shardflow.cli.common import DEFAULT_STATE

    return local_workspace(state_url or DEFAULT_STATE, Path(".shardflow")) / TOKEN_FILE_NAME


@click.command()
@state_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8321, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    help="A name the dashboard is reached by (Host header), besides IP addresses, "
    "localhost and, when bound beyond loopback, this machine's names. Repeatable.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Token file (mode 600). Default: dashboard-tokens.json in the workspace; "
    "created with a new operator and read-only token if missing.",
)
def dashboard(
    state_url: str | None,
    host: str,
    port: int,
    allow_hosts: tuple[str, ...],
    token_file: Path | None,
) -> None:
    """Serve the dashboard: jobs, progress, errors, slowest tasks, logs, and actions.

    \b
    Example:
      shardflow dashboard                     # http://127.0.0.1:8321
      ssh -L 8321:127.0.0.1:8321 login-node   # from your laptop, to reach it on a cluster
    Pages need a token: the read-only one views, the operator one may also pause,
    resume, retry and cancel. The tokens are printed once, when they are created.
    """
    try:
        import uvicorn

        from shardflow.dashboard.app import create_app
        from shardflow.dashboard.auth import generate_token_file, load_token_file
    except ImportError as exc:
        fail(
            f"the dashboard needs extra packages ({exc.name} is missing)",
            hint="pip install 'shardflow[dashboard]'",
        )
    from shardflow.errors import ConfigError

    state = open_cli_state(state_url)
    path = token_file or default_token_file(state_url)
    if not path.exists():
        _announce_tokens(path, generate_token_file(path))
    try:
        tokens = load_token_file(path)
    except ConfigError as exc:
        fail(str(exc))
    if not _is_loopback(host):
        click.echo(
            f"warning: serving on {host}: anyone who can reach it sees the sign-in page, "
            "and tokens cross the network unencrypted; prefer 127.0.0.1 and an SSH tunnel",
            err=True,
        )
    click.echo(f"dashboard on http://{host}:{port}  (Ctrl-C stops it)")
    names = set(allow_hosts)
    if not _is_loopback(host):
        names |= {socket.gethostname(), socket.getfqdn()}
        if host not in ("0.0.0.0", "::"):  # noqa: S104 (compared, not bound)
            names.add(host)
    app = create_app(state, tokens, allowed_hosts=sorted(names))
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=os.environ.get("SHARDFLOW_DASHBOARD_LOG", "warning"),
            server_header=False,
            proxy_headers=False,
        )
    finally:
        state.close()
