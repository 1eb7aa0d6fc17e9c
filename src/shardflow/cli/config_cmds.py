"""``shardflow validate``, ``schema``, ``config show`` and ``init``: the job file commands.

All exit 0 on success and 2 on a config or usage error, after printing every problem as
``file:line:col: field: message`` (one per line, on stderr) and a hint of what to do next.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlparse
from urllib.request import url2pathname

import click

from shardflow.cli.common import fail
from shardflow.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from shardflow.config import LoadedConfig

set_option = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key by its dotted path, e.g. --set resources.slots=8 (repeatable).",
)
SCHEMA_FILE = "shardflow.schema.json"
_GLOB_CHARS = frozenset("*?[")


def printable(text: str) -> str:
    """``text`` with control characters escaped, safe to echo to a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _report(problems: Sequence[ConfigProblem], job_file: Path) -> NoReturn:
    for problem in problems:
        click.echo(printable(str(problem)), err=True)
    count = len(problems)
    click.echo(
        f"hint: fix the {count} problem{'s' if count != 1 else ''} above, then run "
        f"`shardflow validate {job_file}` again",
        err=True,
    )
    sys.exit(2)


def _load(job_file: Path, sets: Sequence[str]) -> LoadedConfig:
    from shardflow.config import load_job_config
    from shardflow.security.redact import check_no_embedded_credentials

    try:
        loaded = load_job_config(job_file, list(sets))
        # refused here as by run and submit: `validate` says what they would say
        check_no_embedded_credentials(loaded.config.model_dump(mode="json"))
        return loaded
    except ConfigError as exc:
        _report(exc.problems, job_file)


def _where(loaded: LoadedConfig, field: str) -> tuple[str, int | None]:
    """The file and line that set ``field`` (``--set`` for the command line)."""
    origin = loaded.origins.get(field, "")
    if origin.startswith(("file:", "user:")):
        where, _, number = origin.partition(":")[2].rpartition(":")
        return where, int(number) if number.isdigit() else None
    if origin:
        return ("--set" if origin == "cli" else origin), None
    return "<config>", None


def check_handler_field(
    loaded: LoadedConfig, strict: bool
) -> tuple[list[ConfigProblem], list[str]]:
    """The handler, found without running its code (:func:`check_handler`): problems, and
    warnings (a module not installed here; a problem with ``strict``)."""
    from shardflow.worker.handler import check_handler

    found = check_handler(loaded.config.handler, loaded.base_dir)
    file, line = _where(loaded, "handler")
    if found.problem:
        return [ConfigProblem(file, line, None, "handler", found.problem)], []
    if found.warning:
        if strict:
            return [ConfigProblem(file, line, None, "handler", found.warning)], []
        return [], [str(ConfigProblem(file, line, None, "handler", found.warning))]
    return [], []


def check_inputs(loaded: LoadedConfig) -> tuple[int, list[ConfigProblem]]:
    """Count the local input files the config names; a glob or path matching none is a
    problem. Remote URLs (``s3://``) count one each and are not contacted."""
    raw = loaded.config.input.path
    entries = [raw] if isinstance(raw, str) else list(raw)
    file, line = _where(loaded, "input.path")
    matched, problems = 0, []
    for i, entry in enumerate(entries):
        local = url2pathname(urlparse(entry).path) if entry.startswith("file://") else entry
        if "://" in local:
            matched += 1
            continue
        if _GLOB_CHARS & set(local):
            found, message = len(glob.glob(local, recursive=True)), "matches no files"
        else:
            found, message = int(os.path.exists(local)), "does not exist"
        matched += found
        if not found:
            field = "input.path" if isinstance(raw, str) else f"input.path[{i}]"
            message = f"{entry!r} {message}: check the path (relative to the job file)"
            problems.append(ConfigProblem(file, line, None, field, message))
    return matched, problems


@click.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@set_option
@click.option(
    "--strict", is_flag=True, help="A handler module not installed here is a problem too."
)
def validate(job_file: Path, sets: tuple[str, ...], strict: bool) -> None:
    """Check JOB_FILE and report every problem, one per line (exit 2 if any).

    Input files are only looked up: a path or glob that matches nothing is a problem. The
    handler is found without running it: its file must exist and define the name; a
    module not installed here is a warning (it may exist on the cluster's nodes only).

    \b
    Example:
      shardflow validate job.yaml
      shardflow validate job.yaml --set resources.slots=8 --strict
    """
    loaded = _load(job_file, sets)
    handler_problems, warnings = check_handler_field(loaded, strict)
    count, problems = check_inputs(loaded)
    for warning in warnings:
        click.echo(f"warning: {printable(warning)}", err=True)
    if handler_problems or problems:
        _report([*handler_problems, *problems], job_file)
    files = "file" if count == 1 else "files"
    click.echo(f"ok: {printable(loaded.config.name)} ({count} input {files} matched)")


@click.command()
def schema() -> None:
    """Print the JSON Schema of a job file (for editors and checks).

    \b
    Example:
      shardflow schema > shardflow.schema.json
    """
    from shardflow.config import job_config_schema

    click.echo(json.dumps(job_config_schema(), indent=2))


@click.group()
def config() -> None:
    """Inspect the effective config of a job file.

    \b
    Example:
      shardflow config show job.yaml --set resources.slots=8
    """


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key, child in value.items() for leaf in _leaves(child, f"{prefix}{key}.")]
    return [(prefix[:-1], value)]


@config.command()
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(job_file: Path, sets: tuple[str, ...], as_json: bool) -> None:
    """Show each config key of JOB_FILE, its value and where it came from.

    Origins: cli (--set), env:SHARDFLOW_SECTION__KEY, file:PATH:LINE, user:PATH:LINE
    (~/.config/shardflow/config.yaml) or default. Keys listed under `secrets` are masked.

    \b
    Example:
      shardflow config show job.yaml
      SHARDFLOW_RESOURCES__SLOTS=4 shardflow config show job.yaml --json
    """
    loaded = _load(job_file, sets)
    secrets = set(loaded.config.secrets)
    rows = []
    for key, value in _leaves(loaded.config.model_dump(mode="json", by_alias=True)):
        if key in secrets or key.rpartition(".")[2] in secrets:
            value = "***"
        rows.append((key, value, loaded.origins.get(key, "default")))
    if as_json:
        data = {key: {"value": value, "origin": origin} for key, value, origin in rows}
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(key) for key, _, _ in rows)
    for key, value, origin in rows:
        click.echo(f"{key:<{width}}  {printable(json.dumps(value))}  ({printable(origin)})")


def _template(name: str) -> str:
    return resources.files("shardflow").joinpath("templates", name).read_text(encoding="utf-8")


@click.command()
@click.argument("directory", default=".", type=click.Path(path_type=Path, file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, force: bool) -> None:
    """Write a commented job.yaml, a handler.py template, the config's JSON Schema and a
    small sample input into DIRECTORY (default: here).

    \b
    Example:
      shardflow init my-job && cd my-job
      shardflow validate job.yaml && shardflow run job.yaml
    """
    from shardflow.config import job_config_schema

    name = Path(os.path.abspath(directory)).name or "my-job"
    files = {
        "job.yaml": _template("job.yaml.tmpl").replace("{{name}}", json.dumps(name)),
        "handler.py": _template("handler.py.tmpl"),
        SCHEMA_FILE: json.dumps(job_config_schema(), indent=2) + "\n",
        "data/sample.jsonl": "".join(
            json.dumps({"id": i, "text": text}) + "\n"
            for i, text in enumerate(["hello", "shardflow", "world"], start=1)
        ),
    }
    existing = [rel for rel in files if (directory / rel).exists()]
    if existing and not force:
        fail(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} "
            f"in {directory}: nothing written",
            hint="pass --force to overwrite them, or choose another directory",
        )
    for rel, text in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        click.echo(f"wrote {target}")
    click.echo(f"next: shardflow validate {directory / 'job.yaml'}")
