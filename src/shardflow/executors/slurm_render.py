"""Rendering sbatch scripts: pure functions from a spec to the script's text.

:func:`render_slot_script` writes the script of one array of worker slots and
:func:`render_reconcile_script` the small follow-up job that runs after the arrays. Both
are checked against golden files (tests/unit/golden/); every value that reaches the
script is validated or shell-quoted here, so nothing a config says can add a line to it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

from shardflow.layout import validate_id

# `--opt` or `--opt=value`: the form a config may give an extra sbatch option in
_OPTION = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*(=\S.*)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
_PLACEHOLDER = re.compile(r"\{\{ (\w+) \}\}")
# options the executor sets itself: a second value would break splitting or tracking
_RESERVED = frozenset({"--array", "--dependency", "--parsable", "--wrap"})

SLOT_ENV = "SHARDFLOW_SLOT"
DEFAULT_LOG_PATTERN = "{workspace}/logs/{job_id}/slurm-%A_%a.out"


@dataclass(frozen=True, slots=True)
class SlurmResources:
    """What every job asks of Slurm; ``None`` leaves the site's default."""

    cpus: int = 1
    memory_mb: int = 2048
    time_minutes: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra_lines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SlurmSlotSpec:
    """One job array of worker slots.

    ``command`` is the worker argv; when ``python`` is set it replaces ``command[0]`` (the
    login node's interpreter) with the compute nodes' one. ``log_path`` is the final
    ``--output`` path (Slurm's ``%A``/``%a`` patterns allowed). ``first_index`` and
    ``last_index`` give the array range; ``throttle`` adds ``%T``.
    """

    job_id: str
    group_id: str
    last_index: int
    command: tuple[str, ...]
    log_path: str
    resources: SlurmResources = field(default_factory=SlurmResources)
    first_index: int = 0
    throttle: int | None = None
    signal_grace_s: int = 60
    requeue: bool = True
    python: str | None = None
    setup_lines: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None

    @property
    def job_name(self) -> str:
        return f"sf-{self.job_id}-{self.group_id}"

    @property
    def array(self) -> str:
        spec = f"{self.first_index}-{self.last_index}"
        return f"{spec}%{self.throttle}" if self.throttle else spec


@dataclass(frozen=True, slots=True)
class SlurmFollowupSpec:
    """The reconcile job: one task, run after ``after`` (job ids) have ended, any way."""

    job_id: str
    command: tuple[str, ...]
    log_path: str
    after: tuple[str, ...] = ()
    resources: SlurmResources = field(
        default_factory=lambda: SlurmResources(cpus=1, memory_mb=1024, time_minutes=15)
    )
    python: str | None = None
    setup_lines: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None

    @property
    def job_name(self) -> str:
        return f"sf-{self.job_id}-reconcile"


def format_time(minutes: int) -> str:
    """Slurm's ``--time`` for ``minutes``: ``HH:MM:SS``, or ``D-HH:MM:SS`` from one day up.

    Raises ValueError unless ``minutes`` is a positive int.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise ValueError(f"time limit must be a positive number of minutes, not {minutes!r}")
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    clock = f"{hours:02d}:{mins:02d}:00"
    return f"{days}-{clock}" if days else clock


def sbatch_line(line: str) -> str:
    """An extra sbatch option as a ``#SBATCH`` line.

    Accepts ``#SBATCH <options>`` as is and prefixes a bare ``--opt[=value]``. Raises
    ValueError for anything else, for a newline, and for options the executor owns
    (``--array``, ``--dependency``).
    """
    if "\n" in line or "\r" in line or "\0" in line:
        raise ValueError(f"extra sbatch line {line!r} holds a line break")
    text = line.strip()
    if text.startswith("#SBATCH "):
        option = text[len("#SBATCH ") :].strip()
        if not option.startswith("-"):
            raise ValueError(f"extra sbatch line {line!r}: expected an option after #SBATCH")
    elif _OPTION.fullmatch(text):
        option, text = text, f"#SBATCH {text}"
    else:
        raise ValueError(
            f"extra sbatch line {line!r}: write '--option=value' or '#SBATCH --option=value'"
        )
    name = re.split(r"[=\s]", option, maxsplit=1)[0]
    if name in _RESERVED:
        raise ValueError(f"extra sbatch line {line!r}: shardflow sets {name} itself")
    return text


def _name(value: str, what: str) -> str:
    if not _SLURM_NAME.fullmatch(value):
        raise ValueError(f"invalid Slurm {what} {value!r}")
    return value


def _one_line(value: str, what: str) -> str:
    if not value or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{what} {value!r} must be one non-empty line")
    return value


def _resource_lines(res: SlurmResources) -> list[str]:
    if isinstance(res.cpus, bool) or not isinstance(res.cpus, int) or res.cpus < 1:
        raise ValueError(f"cpus must be a positive int, not {res.cpus!r}")
    if isinstance(res.memory_mb, bool) or not isinstance(res.memory_mb, int) or res.memory_mb < 1:
        raise ValueError(f"memory must be a positive number of MB, not {res.memory_mb!r}")
    lines = [
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={res.cpus}",
        f"#SBATCH --mem={res.memory_mb}M",
        f"#SBATCH --time={format_time(res.time_minutes)}",
    ]
    for option, value in (("partition", res.partition), ("account", res.account), ("qos", res.qos)):
        if value is not None:
            lines.append(f"#SBATCH --{option}={_name(value, option)}")
    return lines


def _common_lines(log_path: str, workdir: str | None) -> list[str]:
    lines = [f"#SBATCH --output={_quote_directive(_one_line(log_path, 'log path'))}"]
    if workdir is not None:
        lines.append(f"#SBATCH --chdir={_quote_directive(_one_line(workdir, 'workdir'))}")
    return lines


def _quote_directive(value: str) -> str:
    # sbatch splits #SBATCH lines on blanks but honours double quotes
    if '"' in value:
        raise ValueError(f"{value!r}: a double quote cannot appear in an #SBATCH value")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def _exports(env: Mapping[str, str], extra: Sequence[str] = ()) -> str:
    lines = list(extra)
    for key in sorted(env):
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"invalid environment variable name {key!r}")
        if key == SLOT_ENV:
            raise ValueError(f"{SLOT_ENV} is set by the slot script itself")
        lines.append(f"export {key}={shlex.quote(env[key])}")
    return "\n".join(lines) if lines else "# (no environment variables)"


def _setup(lines: Sequence[str]) -> str:
    checked = [_one_line(line, "setup line") for line in lines]
    return "\n".join(checked) if checked else "# (no setup lines)"


def _command(command: Sequence[str], python: str | None) -> str:
    argv = list(command)
    if not argv:
        raise ValueError("the worker command is empty")
    if python is not None:
        argv[0] = _one_line(python, "python interpreter")
    return shlex.join(argv)


def _fill(template: str, values: Mapping[str, str]) -> str:
    text = resources.files("shardflow.executors").joinpath("templates", template).read_text()
    used = set(_PLACEHOLDER.findall(text))
    if used != set(values):
        raise RuntimeError(f"template {template} wants {sorted(used)}, got {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def render_slot_script(spec: SlurmSlotSpec) -> str:
    """The sbatch script for one array of worker slots.

    The array range, resources, log path, ``--signal=B:TERM@grace``, requeue and open
    mode are ``#SBATCH`` lines; the body exports ``SHARDFLOW_SLOT`` as
    ``<array job id>_<index>``, runs the worker in the background and forwards TERM, INT
    and USR1 to it as TERM, and exits with the worker's status. Raises ValueError for an
    invalid id, range, resource, extra line, environment name or grace period.
    """
    validate_id(spec.job_id, "job id")
    validate_id(spec.group_id, "task group id")
    if not 0 <= spec.first_index <= spec.last_index:
        raise ValueError(f"invalid array range {spec.first_index}-{spec.last_index}")
    if spec.throttle is not None and spec.throttle < 1:
        raise ValueError(f"array throttle must be at least 1, not {spec.throttle}")
    if not 0 <= spec.signal_grace_s < spec.resources.time_minutes * 60:
        raise ValueError(
            f"signal grace {spec.signal_grace_s}s must be shorter than the time limit "
            f"({spec.resources.time_minutes} min)"
        )
    directives = [
        f"#SBATCH --job-name={spec.job_name}",
        f"#SBATCH --array={spec.array}",
        *_resource_lines(spec.resources),
        *_common_lines(spec.log_path, spec.workdir),
        "#SBATCH --open-mode=append",
        f"#SBATCH --signal=B:TERM@{spec.signal_grace_s}",
        "#SBATCH --requeue" if spec.requeue else "#SBATCH --no-requeue",
        *(sbatch_line(line) for line in spec.resources.extra_lines),
    ]
    slot = f'export {SLOT_ENV}="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"'
    return _fill(
        "slot.sbatch.tmpl",
        {
            "directives": "\n".join(directives),
            "job_id": spec.job_id,
            "group_id": spec.group_id,
            "exports": _exports(spec.env, [slot]),
            "setup": _setup(spec.setup_lines),
            "command": _command(spec.command, spec.python),
        },
    )


def render_reconcile_script(spec: SlurmFollowupSpec) -> str:
    """The sbatch script of the follow-up job that runs ``spec.command`` once.

    ``--dependency=afterany:<ids>`` makes it wait for every job in ``spec.after`` to end,
    whatever its outcome. Raises ValueError for an invalid id or dependency.
    """
    validate_id(spec.job_id, "job id")
    for job in spec.after:
        if not job.isdigit():
            raise ValueError(f"invalid Slurm job id {job!r} in a dependency")
    directives = [
        f"#SBATCH --job-name={spec.job_name}",
        *_resource_lines(spec.resources),
        *_common_lines(spec.log_path, spec.workdir),
        "#SBATCH --open-mode=append",
        *(sbatch_line(line) for line in spec.resources.extra_lines),
    ]
    if spec.after:
        directives.insert(1, f"#SBATCH --dependency=afterany:{':'.join(spec.after)}")
    return _fill(
        "reconcile.sbatch.tmpl",
        {
            "directives": "\n".join(directives),
            "job_id": spec.job_id,
            "exports": _exports(spec.env),
            "setup": _setup(spec.setup_lines),
            "command": _command(spec.command, spec.python),
        },
    )
