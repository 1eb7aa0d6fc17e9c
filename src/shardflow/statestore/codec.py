"""Model ↔ JSON bytes for the state-store adapters, on the hot path of every task.

The bytes are exactly ``orjson.dumps(models.to_dict(obj))`` and decoding gives exactly
``models.from_dict(cls, ...)`` (both property-tested in ``tests/unit/test_models.py``);
this module only makes them fast: orjson serialises the dataclass natively, and the
decoder resolves each class's type hints once instead of on every call (``from_dict``
spends about 200 µs per task in ``typing.get_type_hints``).

Also here: the id checks every adapter runs before an id becomes part of a key.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

from shardflow.errors import ManifestError
from shardflow.layout import validate_id
from shardflow.models import SCHEMA_VERSION, Task

M = TypeVar("M")

_Converter = Callable[[Any], Any]
_SCHEMA_SUFFIX = b',"schema_version":%d}' % SCHEMA_VERSION


def _default(value: object) -> object:
    # orjson handles dict, list, tuple, enums and dataclasses itself; other mappings
    # (MappingProxyType, user Mapping types) are what to_dict turns into plain dicts
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(value: object) -> bytes:
    """JSON bytes of a plain value (event details); TypeError if it is not JSON-able."""
    return orjson.dumps(value, default=_default)


def decode_json(raw: bytes | str) -> Any:
    return orjson.loads(raw)


_HAS_SCHEMA_FIELD: dict[type, bool] = {}
_PLANS: dict[type, tuple[frozenset[str], dict[str, _Converter | None]]] = {}


def _has_schema_field(cls: type) -> bool:
    has = _HAS_SCHEMA_FIELD.get(cls)
    if has is None:
        has = _HAS_SCHEMA_FIELD[cls] = any(
            f.name == "schema_version" for f in dataclasses.fields(cls)
        )
    return has


def encode_model(obj: object) -> bytes:
    """The JSON bytes of a model: byte-for-byte ``orjson.dumps(to_dict(obj))``.

    Raises TypeError for values JSON cannot hold. Floats must be finite: orjson writes
    NaN and infinities as ``null``.
    """
    raw = orjson.dumps(obj, default=_default)
    if _has_schema_field(type(obj)) or raw == b"{}":
        return raw
    return raw[:-1] + _SCHEMA_SUFFIX


def _converter(tp: Any) -> _Converter | None:
    """What ``models._decode`` does to a non-None value of type ``tp``; None: nothing."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _converter(args[0]) if len(args) == 1 else None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if origin is tuple:
        inner = _converter(typing.get_args(tp)[0])
        if inner is None:
            return tuple
        return lambda v: tuple(None if x is None else inner(x) for x in v)
    if tp is float:
        return lambda v: float(v) if isinstance(v, int) else v
    return None


def _plan(cls: type) -> tuple[frozenset[str], dict[str, _Converter | None]]:
    # races between threads only compute the same plan twice
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        plan = _PLANS[cls] = (
            frozenset(names),
            {name: _converter(hints[name]) for name in names},
        )
    return plan


def decode_model(cls: type[M], raw: bytes | str | Mapping[str, Any]) -> M:
    """Rebuild a model from :func:`encode_model` bytes (or a parsed dict).

    Raises :class:`ManifestError` for another ``schema_version`` or unknown fields,
    exactly as ``models.from_dict`` does.
    """
    data = orjson.loads(raw) if isinstance(raw, bytes | str) else raw
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{cls.__name__}: unsupported schema_version {version}")
    names, converters = _plan(cls)
    kwargs: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in names:
            conv = converters[key]
            kwargs[key] = value if value is None or conv is None else conv(value)
        elif key != "schema_version":
            unknown.append(key)
    if unknown:
        raise ManifestError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**kwargs)


def check_task_ids(task: Task) -> None:
    """Raise InvalidIdError unless the task's job, task and batch ids are valid ids."""
    validate_id(task.job_id, "job id")
    validate_id(task.task_id, "task id")
    validate_id(task.batch_id, "batch id")
