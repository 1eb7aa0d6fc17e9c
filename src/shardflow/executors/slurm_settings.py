"""Settings of the Slurm executor, and how a job config's keys map onto them.

Config keys (see docs/slurm.md)::

    resources: {cpus, memory, time, partition, account, qos}
    slurm: {sbatch, setup, python, log_path, signal_grace, requeue, array_throttle,
            max_array_size, submit_rate, sbatch_retries, workdir,
            reconcile: {cpus, memory, time, partition, account, qos, sbatch}}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from shardflow.executors.slurm_render import DEFAULT_LOG_PATTERN, SlurmResources, sbatch_line

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class SlurmSettings:
    """How the Slurm executor submits; every field has a working default.

    ``log_pattern`` and ``followup_log_pattern`` may use ``{workspace}``, ``{job_id}``,
    ``{group_id}`` and Slurm's ``%A``/``%a``/``%j``. ``submit_rate`` is sbatch calls per
    second; ``sbatch_retries`` counts retries of any Slurm command on a transient error.
    ``python`` replaces the worker command's interpreter on the compute nodes.
    Raises ValueError on construction for values Slurm cannot take.
    """

    resources: SlurmResources = field(default_factory=SlurmResources)
    followup_resources: SlurmResources = field(
        default_factory=lambda: SlurmResources(cpus=1, memory_mb=1024, time_minutes=15)
    )
    log_pattern: str = DEFAULT_LOG_PATTERN
    followup_log_pattern: str = "{workspace}/logs/{job_id}/slurm-reconcile-%j.out"
    signal_grace_s: int = 60
    requeue: bool = True
    max_array_size: int | None = None
    array_throttle: int | None = None
    python: str | None = None
    setup_lines: tuple[str, ...] = ()
    workdir: str | None = None
    submit_rate: float = 2.0
    sbatch_retries: int = 5
    retry_base_s: float = 1.0
    retry_cap_s: float = 30.0
    command_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.submit_rate <= 0:
            raise ValueError(f"slurm.submit_rate must be above 0, not {self.submit_rate}")
        if self.sbatch_retries < 0:
            raise ValueError(f"slurm.sbatch_retries must be 0 or more, not {self.sbatch_retries}")
        if self.max_array_size is not None and self.max_array_size < 1:
            raise ValueError(f"slurm.max_array_size must be at least 1, not {self.max_array_size}")
        if self.array_throttle is not None and self.array_throttle < 1:
            raise ValueError(f"slurm.array_throttle must be at least 1, not {self.array_throttle}")
        if not 0 <= self.signal_grace_s <= 65535:
            raise ValueError(f"slurm.signal_grace must be 0..65535 s, not {self.signal_grace_s}")
        for line in (*self.resources.extra_lines, *self.followup_resources.extra_lines):
            sbatch_line(line)


def memory_mb(value: object) -> int:
    """MB (rounded up) from bytes (an int) or a size string (``2GiB``, ``512M``, ``4G``).

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid memory {value!r}")
    if isinstance(value, int | float):
        return max(1, math.ceil(value / 2**20))
    match = _SIZE.fullmatch(str(value))
    if match is None:
        raise ValueError(f"invalid memory {value!r}: write e.g. 2GiB or 512M")
    number, unit = float(match.group(1)), match.group(2).upper()
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]
    if not unit and not match.group(3):
        scale = 2**20  # a bare number in a string means MB, as in sbatch --mem
    return max(1, math.ceil(number * scale / 2**20))


def duration_seconds(value: object) -> float:
    """Seconds from a number (seconds), a timedelta, or ``30s``/``90m``/``2h``/``1d``.

    Raises ValueError for anything else, and for a duration that is not above 0.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, int | float):
        result = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if match is None:
            raise ValueError(f"invalid duration {value!r}: write e.g. 30s, 90m, 2h or 1d")
        result = float(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]
    if result <= 0:
        raise ValueError(f"invalid duration {value!r}: must be above 0")
    return result


def time_minutes(value: object) -> int:
    """Whole minutes (rounded up) for a time limit given as :func:`duration_seconds` takes."""
    return math.ceil(duration_seconds(value) / 60)


def _get(section: object, name: str, default: Any = None) -> Any:
    # the config model may leave a key out (None) or be a plain mapping in tests
    if section is None:
        return default
    value = section.get(name) if isinstance(section, dict) else getattr(section, name, None)
    return default if value is None else value


def _resources(section: object, defaults: SlurmResources, extra: tuple[str, ...]) -> SlurmResources:
    """Resources from a config section; keys it leaves out keep ``defaults``."""
    memory = _get(section, "memory")
    time = _get(section, "time")
    return SlurmResources(
        cpus=int(_get(section, "cpus", defaults.cpus)),
        memory_mb=memory_mb(memory) if memory is not None else defaults.memory_mb,
        time_minutes=time_minutes(time) if time is not None else defaults.time_minutes,
        partition=_get(section, "partition", defaults.partition),
        account=_get(section, "account", defaults.account),
        qos=_get(section, "qos", defaults.qos),
        extra_lines=extra,
    )


def settings_from_config(cfg: object) -> SlurmSettings:
    """Settings from a job config's ``resources`` and ``slurm`` sections (None: defaults).

    Sizes may be bytes or strings, times seconds or strings. Raises ValueError for a
    value Slurm cannot take.
    """
    if cfg is None:
        return SlurmSettings()
    base = SlurmSettings()
    slurm = _get(cfg, "slurm")
    # extra sbatch lines: `resources.extra_sbatch` (the job config's name) or `slurm.sbatch`
    extra = tuple(
        str(line)
        for line in (*_get(_get(cfg, "resources"), "extra_sbatch", ()), *_get(slurm, "sbatch", ()))
    )
    log_dir = _get(slurm, "log_dir")
    grace = _get(slurm, "signal_grace")
    reconcile = _get(slurm, "reconcile")
    slots = _resources(_get(cfg, "resources"), base.resources, extra)
    # the reconcile job goes where the slots go, with its own small size
    followup_defaults = replace(
        base.followup_resources, partition=slots.partition, account=slots.account, qos=slots.qos
    )
    followup_extra = tuple(str(line) for line in _get(reconcile, "sbatch", extra))
    return SlurmSettings(
        resources=slots,
        followup_resources=_resources(reconcile, followup_defaults, followup_extra),
        log_pattern=str(
            _get(slurm, "log_path", f"{log_dir}/slurm-%A_%a.out" if log_dir else base.log_pattern)
        ),
        signal_grace_s=base.signal_grace_s if grace is None else round(duration_seconds(grace)),
        requeue=bool(_get(slurm, "requeue", base.requeue)),
        max_array_size=_get(slurm, "max_array_size"),
        array_throttle=_get(slurm, "array_throttle"),
        python=_get(slurm, "python"),
        setup_lines=tuple(str(line) for line in _get(slurm, "setup", ())),
        workdir=_get(slurm, "workdir"),
        submit_rate=float(_get(slurm, "submit_rate", base.submit_rate)),
        sbatch_retries=int(_get(slurm, "sbatch_retries", base.sbatch_retries)),
    )
