"""Typed config values (durations, sizes, rates) and the checks the job config shares.

Each value type accepts a human form in YAML (``90s``, ``64MiB``, ``50/s``) or a plain
number, and is stored as a number: :data:`Duration` as float seconds, :data:`Size` as int
bytes, :data:`Rate` as float per second. Because ``model_dump(mode="json")`` writes those
numbers and the validators accept numbers, a config snapshot re-validates unchanged in a
worker. Parse errors are :class:`pydantic_core.PydanticCustomError` whose message says what
was expected and what was given, so the config loader can show them as they are.

The section models (:class:`JobConfig` and the rest) live in :mod:`shardflow.configmodels`,
which is built from this module; they are re-exported here, loaded on first use.
"""

from __future__ import annotations

import codecs
import math
import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from shardflow.configmodels import (
        AggregateConfig,
        BackendsConfig,
        BackoffConfig,
        BatchingConfig,
        ClassRuleConfig,
        CsvConfig,
        InputConfig,
        JobConfig,
        LoggingConfig,
        OutputConfig,
        RateLimitConfig,
        ResourcesConfig,
        RetryConfig,
        SlurmConfig,
        WorkerConfig,
    )

__all__ = [
    "AggregateConfig",
    "BackendsConfig",
    "BackoffConfig",
    "BatchingConfig",
    "ClassRuleConfig",
    "CsvConfig",
    "Duration",
    "InputConfig",
    "JobConfig",
    "LoggingConfig",
    "OneLine",
    "OutputConfig",
    "Rate",
    "RateLimitConfig",
    "ResourcesConfig",
    "RetryConfig",
    "Section",
    "Size",
    "SlurmConfig",
    "WorkerConfig",
    "check_arrow_type",
    "check_encoding",
    "check_function_ref",
    "check_one_line",
    "check_regex",
    "custom_error",
    "parse_duration",
    "parse_rate",
    "parse_size",
]


class Section(BaseModel):
    """A config section: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*(ms|s|m|h|d)", re.IGNORECASE)
_SIZE = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z]*)\s*$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_RATE = re.compile(rf"^\s*({_NUMBER})\s*/\s*([A-Za-z]+)\s*$")
_RATE_UNITS = {
    **dict.fromkeys(("s", "sec", "second"), 1.0),
    **dict.fromkeys(("m", "min", "minute"), 60.0),
    **dict.fromkeys(("h", "hr", "hour"), 3600.0),
    **dict.fromkeys(("d", "day"), 86400.0),
}
_FUNCTION_REF = re.compile(r"^(?:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|[^:]+\.py):[A-Za-z_]\w*$")
_ARROW_TYPES = frozenset(
    {"bool", "boolean", "string", "utf8", "large_string", "binary", "large_binary"}
    | {"float16", "float32", "float64", "float", "double", "halffloat", "date32", "date64"}
    | {f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)}
)
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=[\w/+:-]+)?\]$")


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _as_number_text(value: Any) -> float | None:
    number = _number(value)
    if number is None and isinstance(value, str) and re.fullmatch(rf"\s*(?:{_NUMBER})\s*", value):
        number = float(value)
    return number


def parse_duration(value: Any) -> float:
    """Seconds from ``90s``, ``5m``, ``1h30m``, ``250ms``, ``2d`` or a number of seconds.

    Raises ``ValueError`` for anything else, for negative or non-finite values.
    """
    seconds = _as_number_text(value)
    if seconds is None and isinstance(value, str) and value.strip():
        text, pos, total = value.strip(), 0, 0.0
        while pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                break
            total += float(match[1]) * _DURATION_UNITS[match[2].lower()]
            pos = match.end()
        if pos == len(text):
            seconds = total
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration like 90s, 5m, 1h30m or 250ms, got {value!r}")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from ``64MiB``, ``1GiB``, ``500KB``, ``10B`` or a plain number of bytes.

    KB/MB/GB/TB are powers of 1000 and KiB/MiB/GiB/TiB powers of 1024 (case does not
    matter). A bare ``k``/``M``/``G`` is refused as ambiguous. Raises ``ValueError``.
    """
    number = _number(value)
    if number is not None:
        size = number
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match[2].lower()
        if unit not in _SIZE_UNITS:
            hint = " (a bare k/M/G is ambiguous: write KB or KiB)" if len(unit) == 1 else ""
            raise ValueError(
                f"expected a size like 64MiB, 500KB or a byte count, got {value!r}{hint}"
            )
        size = float(match[1]) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"expected a size like 64MiB, 500KB or a byte count, got {value!r}")
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"expected a size of zero bytes or more, got {value!r}")
    return round(size)


def parse_rate(value: Any) -> float:
    """Events per second from ``50/s``, ``3000/min``, ``10/h``, ``5/d`` or a number per second.

    Raises ``ValueError`` unless the rate is finite and above zero.
    """
    rate = _as_number_text(value)
    if rate is None and isinstance(value, str) and (match := _RATE.match(value)):
        per = _RATE_UNITS.get(match[2].lower())
        rate = None if per is None else float(match[1]) / per
    if rate is None or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"expected a rate above zero like 50/s, 3000/min or 10/h, got {value!r}")
    return rate


def _pydantic(kind: str, parse: Any) -> Any:
    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            # a template with no placeholders: the message (with the user's text) is final
            raise PydanticCustomError(kind, "{message}", {"message": str(exc)}) from None

    return validate


def _pattern_schema(pattern: str, example: str, bound: str) -> dict[str, Any]:
    return {
        "anyOf": [{"type": "number", bound: 0}, {"type": "string", "pattern": pattern}],
        "examples": [example],
    }


Duration = Annotated[
    float,
    BeforeValidator(_pydantic("duration", parse_duration)),
    WithJsonSchema(
        _pattern_schema(r"^\s*((\d+(\.\d+)?|\.\d+)\s*(ms|s|m|h|d)\s*)+$", "90s", "minimum")
    ),
]
"""Float seconds; YAML may say ``90s``, ``5m``, ``1h30m``, ``250ms`` or a number."""

Size = Annotated[
    int,
    BeforeValidator(_pydantic("size", parse_size)),
    WithJsonSchema(
        _pattern_schema(
            r"^\s*(\d+(\.\d+)?|\.\d+)\s*([KkMmGgTt][Ii]?[Bb]|[Bb])?\s*$", "64MiB", "minimum"
        )
    ),
]
"""Int bytes; YAML may say ``64MiB``, ``500KB`` or a number of bytes."""

Rate = Annotated[
    float,
    BeforeValidator(_pydantic("rate", parse_rate)),
    WithJsonSchema(
        _pattern_schema(r"^\s*(\d+(\.\d+)?|\.\d+)\s*/\s*[A-Za-z]+\s*$", "50/s", "exclusiveMinimum")
    ),
]
"""Float events per second; YAML may say ``50/s``, ``3000/min``, ``10/h`` or a number."""


def custom_error(kind: str, message: str) -> PydanticCustomError:
    """A validation error of type ``kind`` whose ``message`` is shown as it is."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def check_function_ref(value: str) -> str:
    """``module.path:function`` or ``path/to/file.py:function`` (the shape only: no import)."""
    if not _FUNCTION_REF.fullmatch(value):
        raise custom_error(
            "function_ref",
            f"expected 'module.path:function' or 'path/to/file.py:function', got {value!r}",
        )
    return value


def check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            message = f"not a valid regular expression ({exc}): {value!r}"
            raise custom_error("regex", message) from None
    return value


def check_encoding(value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise custom_error("encoding", f"unknown text encoding {value!r} (e.g. utf-8)") from None
    return value


def check_one_line(value: Any) -> Any:
    """Refuse line breaks: these values land in generated scripts, one per line."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, str) and ("\n" in item or "\r" in item or "\0" in item):
            raise custom_error("one_line", f"must be a single line, got {item!r}")
    return value


def check_arrow_type(value: str) -> str:
    if value not in _ARROW_TYPES and not _TIMESTAMP.fullmatch(value):
        raise custom_error(
            "arrow_type",
            f"unknown column type {value!r} (use int64, double, string, bool, timestamp[us], …)",
        )
    return value


OneLine = AfterValidator(check_one_line)
"""Attach to a str (or list of str) field whose value must not contain line breaks."""


def __getattr__(name: str) -> object:
    """Serve the section models from :mod:`shardflow.configmodels` (PEP 562).

    They are loaded lazily because configmodels imports this module: an eager import here
    would fail whenever configmodels is imported first.
    """
    from shardflow import configmodels

    if name in configmodels.__all__:
        return getattr(configmodels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    from shardflow import configmodels

    return sorted({*globals(), *configmodels.__all__})
