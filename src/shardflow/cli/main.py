"""The ``shardflow`` command: a click group whose commands load lazily.

Each command lives in its own module under :mod:`shardflow.cli` and is imported only
when it runs (or when its help is shown), so ``shardflow --help`` and shell completion
never import pyarrow, boto3 or pydantic.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from shardflow.errors import ShardflowError

# name → (module, attribute, one-line help). Help is here so `--help` imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("shardflow.cli.run", "run", "Submit a job and drive it to the end."),
    "submit": (
        "shardflow.cli.run",
        "submit",
        "Submit a job (split, register, dispatch) and return.",
    ),
    "status": ("shardflow.cli.status", "status", "Show a job's progress, or list recent jobs."),
    "jobs": ("shardflow.cli.status", "jobs", "List recent jobs with their state."),
    "validate": (
        "shardflow.cli.config_cmds",
        "validate",
        "Check a job file; report every problem.",
    ),
    "schema": ("shardflow.cli.config_cmds", "schema", "Print the job config's JSON Schema."),
    "config": (
        "shardflow.cli.config_cmds",
        "config",
        "Show the effective config and each value's origin.",
    ),
    "init": (
        "shardflow.cli.config_cmds",
        "init",
        "Write a commented job.yaml and a handler template.",
    ),
    "pause": ("shardflow.cli.control", "pause", "Stop new leases and token issuance for a job."),
    "resume": ("shardflow.cli.control", "resume", "Resume a paused job."),
    "retry": ("shardflow.cli.control", "retry", "Re-drive a job's failed tasks."),
    "cancel": (
        "shardflow.cli.control",
        "cancel",
        "Cancel a job: stop its slots, keep what finished.",
    ),
    "purge": ("shardflow.cli.control", "purge", "Delete a job's objects and state."),
    "recover": (
        "shardflow.cli.control",
        "recover",
        "Re-drive a stuck job and report what was done.",
    ),
    "logs": ("shardflow.cli.status", "logs", "Show a job's or a task's worker log."),
    "limit": ("shardflow.cli.limit", "limit", "Show or change a job's rate limits while it runs."),
    "doctor": (
        "shardflow.cli.doctor",
        "doctor",
        "Check the AWS bucket, table and queues a job needs.",
    ),
    "dashboard": ("shardflow.cli.dashboard", "dashboard", "Serve the web dashboard on 127.0.0.1."),
    "watch": (
        "shardflow.cli.watch",
        "watch",
        "Check alert rules once or in a loop and send alerts.",
    ),
    "audit": ("shardflow.cli.audit", "audit", "Verify or show the tamper-evident audit log."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(spec[0])
        command = getattr(module, spec[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shardflow")
@click.option(
    "--debug", is_flag=True, envvar="SHARDFLOW_DEBUG", help="Show tracebacks of errors too."
)
def cli(debug: bool) -> None:
    """shardflow runs one Python function over millions of records, durably.

    \b
    Example:
      shardflow run examples/quickstart/job.yaml
      shardflow status            # recent jobs
    """
    DEBUG[0] = debug


PRIVATE_UMASK = 0o077
"""Files shardflow's processes create are 0600 and folders 0700 (docs/security.md)."""

DEBUG = [False]
"""Whether ``--debug`` was given: errors then show their traceback."""


def main() -> None:
    """The console script: click's standalone handling, except that Ctrl-C exits 130 (click
    itself turns it into "Aborted!" and 1, which here means "the job failed")."""
    os.umask(PRIVATE_UMASK)  # the workspace, state, logs and results are the user's alone
    try:
        code = cli.main(prog_name="shardflow", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # Ctrl-C while a command ran (Abort from it), or at a prompt (Abort from None)
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(130)
        click.echo("Aborted!", err=True)  # a prompt declined, or stdin closed
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except ShardflowError as exc:
        # an expected failure (a store that cannot be reached, a resource missing, ...):
        # one line, no traceback
        if DEBUG[0]:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        if DEBUG[0]:
            traceback.print_exc()
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        click.echo(
            "this is a bug in shardflow: please report it with the output of the same "
            "command run with --debug (shardflow --debug ...)",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
