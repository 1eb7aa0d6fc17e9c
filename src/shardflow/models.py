"""Plain data for jobs, tasks, batches and attempts, and the legal state transitions.

Models are frozen dataclasses without behaviour beyond JSON round-trips: services receive
the ports they use, models never carry a client. ``to_dict``/``from_dict`` round-trip
without loss (property-tested), and every serialised form carries ``schema_version``.

State machines (DESIGN.md, Task states)::

    PENDING → LEASED → SUCCEEDED
    LEASED → RETRY_WAIT → LEASED
    LEASED → FAILED;  LEASED → PENDING (lease expired, preempted)
    any non-final → CANCELLED;  FAILED → PENDING (``shardflow retry``)
    SUCCEEDED → PENDING (repair: its result object failed checksum verification)

Jobs move ``PENDING → SPLITTING → RUNNING → AGGREGATING → SUCCEEDED | FAILED``; any
non-final job may be ``CANCELLED``; a finished job may go back to ``RUNNING`` when its
failures are re-driven. :func:`check_transition` is the one place these rules live.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from shardflow.errors import IllegalTransitionError, ManifestError

SCHEMA_VERSION = 1


class TaskStatus(enum.StrEnum):
    PENDING = "PENDING"
    LEASED = "LEASED"
    RETRY_WAIT = "RETRY_WAIT"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_TASK


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    SPLITTING = "SPLITTING"
    RUNNING = "RUNNING"
    AGGREGATING = "AGGREGATING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_JOB


class Phase(enum.StrEnum):
    SPLIT = "split"
    MAP = "map"
    AGGREGATE = "aggregate"
    FINALIZE = "finalize"


class ErrorClass(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    INFRASTRUCTURE = "infrastructure"
    UNKNOWN = "unknown"


_FINAL_TASK = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})
_FINAL_JOB = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.LEASED, TaskStatus.CANCELLED}),
    TaskStatus.LEASED: frozenset(
        {
            TaskStatus.SUCCEEDED,
            TaskStatus.RETRY_WAIT,
            TaskStatus.FAILED,
            TaskStatus.PENDING,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.RETRY_WAIT: frozenset({TaskStatus.LEASED, TaskStatus.PENDING, TaskStatus.CANCELLED}),
    # repair only: the committed result object failed its checksum, so the task runs again
    TaskStatus.SUCCEEDED: frozenset({TaskStatus.PENDING}),
    TaskStatus.FAILED: frozenset({TaskStatus.PENDING}),
    TaskStatus.CANCELLED: frozenset(),
}

JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.SPLITTING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.SPLITTING: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.AGGREGATING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.AGGREGATING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RUNNING}
    ),
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset(),
}


def check_transition(current: TaskStatus | JobStatus, target: TaskStatus | JobStatus) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current → target`` is legal.

    Staying in the same state is legal only for a LEASED task (a heartbeat) and for a job
    (a counter or flag update that does not change its status).
    """
    if isinstance(current, TaskStatus) and isinstance(target, TaskStatus):
        if current is target is TaskStatus.LEASED or target in TASK_TRANSITIONS[current]:
            return
    elif (
        isinstance(current, JobStatus)
        and isinstance(target, JobStatus)
        and (current is target or target in JOB_TRANSITIONS[current])
    ):
        return
    raise IllegalTransitionError(f"illegal transition {current!s} → {target!s}")


@dataclass(frozen=True, slots=True)
class Batch:
    """An immutable slice of the input: a byte range of a plain file, or a written file.

    ``source`` is the input URL (byte range) or the object key (written batch).
    ``first_line`` is the 1-based line (or row) number of the first record in the source,
    ``first_ordinal`` the 0-based position of the first record in the whole input.
    ``skip`` holds batch-relative ordinals to skip (duplicate keys rejected at split).
    """

    batch_id: str
    source: str
    format: str
    records: int
    first_line: int
    first_ordinal: int
    start: int = 0
    end: int | None = None
    written: bool = False
    source_index: int = 0
    skip: tuple[int, ...] = ()
    header: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    job_id: str
    task_id: str
    batch_id: str
    status: TaskStatus = TaskStatus.PENDING
    version: int = 0
    attempt: int = 0
    group_id: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    not_before: float | None = None
    result_attempt: int | None = None
    items_total: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    rows: int = 0
    error_class: ErrorClass | None = None
    error_message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    # attempts before this number were spent before a `shardflow retry` re-drove the task
    attempt_floor: int = 0

    @property
    def attempts_used(self) -> int:
        return self.attempt - self.attempt_floor


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    name: str
    status: JobStatus = JobStatus.PENDING
    phase: Phase = Phase.SPLIT
    version: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    config: Mapping[str, Any] = field(default_factory=dict)
    total_tasks: int = 0
    total_items: int = 0
    paused: bool = False
    cancel_requested: bool = False
    output_uri: str | None = None
    message: str | None = None
    submitted_by: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """Tasks dispatched in one round, with the worker slots started for them."""

    job_id: str
    group_id: str
    round: int
    slots: int
    executor: str
    handles: tuple[str, ...] = ()
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of a task by one worker; ``fence`` is the task version it leased."""

    job_id: str
    task_id: str
    number: int
    owner: str
    fence: int
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An entry of a job's append-only history (audit and timeline)."""

    job_id: str
    kind: str
    at: float
    actor: str = "shardflow"
    detail: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0


def item_key(batch_id: str, ordinal: int, id_value: object | None = None) -> str:
    """The item key: the configured id field's value, else ``batch_id:ordinal``."""
    if id_value is None:
        return f"{batch_id}:{ordinal}"
    return id_value if isinstance(id_value, str) else str(id_value)


M = TypeVar("M")


def to_dict(obj: object) -> dict[str, Any]:
    """A JSON-ready dict of a model, with ``schema_version``."""
    assert dataclasses.is_dataclass(obj)
    assert not isinstance(obj, type)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        out[f.name] = _encode(getattr(obj, f.name))
    out.setdefault("schema_version", SCHEMA_VERSION)
    return out


def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
    """Rebuild a model from :func:`to_dict` output; unknown keys are refused."""
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{cls.__name__}: unsupported schema_version {version}")
    hints, names = _hints(cast(type, cls))
    unknown = set(data) - names - {"schema_version"}
    if unknown:
        raise ManifestError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {k: _decode(hints[k], v) for k, v in data.items() if k in names}
    return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    names = frozenset(f.name for f in dataclasses.fields(cls))
    return typing.get_type_hints(cls), names


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _decode(args[0], value) if len(args) == 1 else value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if origin is tuple:
        (arg, *_rest) = typing.get_args(tp)
        return tuple(_decode(arg, v) for v in value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value
