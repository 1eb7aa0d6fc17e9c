"""The error taxonomy and :func:`classify`.

Exception tree::

    ShardflowError
    ├── UsageError                 bad command-line use (exit 2)
    ├── ConfigError                invalid job config; every problem with file:line:col (exit 2)
    ├── InvalidIdError             an id that does not match ``^[a-z0-9][a-z0-9_-]{0,62}$``
    ├── IllegalTransitionError     a state change the state machine forbids (a bug: raised loudly)
    ├── ManifestError              a manifest that does not parse or whose checksum fails
    ├── InputError                 an input that cannot be read (missing file, unknown format)
    ├── HandlerLoadError           the handler cannot be loaded (missing, broken, not a handler)
    ├── SchemaDriftError           task outputs whose column types cannot be unified (the job fails)
    ├── StoreError                 a store or queue operation failed
    │   ├── NotFoundError          the object, job or task does not exist
    │   ├── ConflictError          a version-fenced write was refused: someone else holds the row
    │   ├── ChecksumMismatchError  an object's bytes do not match the checksum that names it
    │   ├── CorruptResultError     committed results failed verification; their tasks re-run
    │   └── TasksNotFinalError     aggregation was asked for while some tasks can still run
    ├── JobFailedError             failures above the tolerated threshold (exit 1)
    └── HandlerError               raised *by user handlers* to state how an item failed:
        ├── TransientError         retry later (network, throttling, timeouts)
        ├── PermanentError         never retry (bad item, validation)
        └── InfrastructureError    the node is in trouble (disk full, out of memory)

    StopRequested (a BaseException) the worker was told to stop (SIGTERM, SIGINT) while a
                                   handler waited in ``ctx.acquire``: it unwinds the
                                   handler, which must not catch it, and the task is released

:func:`classify` maps any exception to an :class:`~shardflow.models.ErrorClass`; the
job config may add rules in front of the default mapping (``retry.rules``).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shardflow.models import ErrorClass


class ShardflowError(Exception):
    """Base of every error shardflow raises on purpose."""


class UsageError(ShardflowError):
    pass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config: where it is, which field, and what to do."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        if self.file == "<config>" and self.line is None:
            return f"{self.field}: {self.message}" if self.field else self.message
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class ConfigError(ShardflowError):
    def __init__(self, problems: Sequence[ConfigProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem("<config>", None, None, "", problems)]
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidIdError(ShardflowError, ValueError):
    pass


class IllegalTransitionError(ShardflowError):
    pass


class ManifestError(ShardflowError):
    pass


class InputError(ShardflowError):
    pass


class HandlerLoadError(ShardflowError):
    """The handler cannot be loaded: its file or module is missing, does not define the
    name, fails to import, or is not a handler. The job cannot run at all."""


class SchemaDriftError(ShardflowError):
    """Task outputs disagree on a column's type in a way no promotion resolves: the job
    fails with the column, the types and the fix (declare it in ``output.schema``)."""


class StoreError(ShardflowError):
    pass


class NotFoundError(StoreError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class ConflictError(StoreError):
    pass


class ChecksumMismatchError(StoreError):
    pass


class CorruptResultError(StoreError):
    def __init__(self, task_ids: list[str]) -> None:
        self.task_ids = task_ids
        super().__init__(f"{len(task_ids)} committed result(s) failed verification: {task_ids[:5]}")


class TasksNotFinalError(StoreError):
    """The job's output was asked for while some of its tasks are not final (one was
    re-driven meanwhile): the map phase goes on first."""


class JobFailedError(ShardflowError):
    pass


class StopRequested(BaseException):
    """The worker slot was told to stop while the handler waited for rate-limit tokens.

    A ``BaseException``, like ``KeyboardInterrupt``, so that a handler's ``except
    Exception`` does not turn a preemption into a failed item: the attempt releases its
    task, and the items since its last checkpoint run again in the next attempt.
    """


class HandlerError(Exception):
    """Base for exceptions a handler raises to say how its item failed."""


class TransientError(HandlerError):
    pass


class PermanentError(HandlerError):
    pass


class InfrastructureError(HandlerError):
    pass


@dataclass(frozen=True, slots=True)
class ClassRule:
    """A user rule: exception type names, a message pattern and/or HTTP statuses → class."""

    error_class: ErrorClass
    exceptions: tuple[str, ...] = ()
    message: str | None = None
    http_status: tuple[int, ...] = ()

    def matches(self, exc: BaseException) -> bool:
        if self.exceptions and not any(
            name in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}")
            for cls in type(exc).__mro__
            for name in self.exceptions
        ):
            return False
        if self.message is not None and not re.search(self.message, str(exc)):
            return False
        return not self.http_status or http_status_of(exc) in self.http_status


def http_status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, for the common client libraries."""
    for attr in ("status", "status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    for attr in ("status_code", "status"):
        value = getattr(response, attr, None)
        if isinstance(value, int):
            return value
    return None


_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_INFRA_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EROFS, errno.EIO})


def classify(exc: BaseException, rules: Sequence[ClassRule] = ()) -> ErrorClass:
    """The error class of ``exc``: user rules first, then the default mapping."""
    from shardflow.models import ErrorClass

    for rule in rules:
        if rule.matches(exc):
            return rule.error_class
    if isinstance(exc, TransientError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, PermanentError):
        return ErrorClass.PERMANENT
    if isinstance(exc, InfrastructureError | MemoryError):
        return ErrorClass.INFRASTRUCTURE
    if isinstance(exc, OSError) and exc.errno in _INFRA_ERRNOS:
        return ErrorClass.INFRASTRUCTURE
    if isinstance(exc, TimeoutError | ConnectionError):
        return ErrorClass.TRANSIENT
    status = http_status_of(exc)
    if status is not None:
        if status in _TRANSIENT_HTTP:
            return ErrorClass.TRANSIENT
        if 400 <= status < 500:
            return ErrorClass.PERMANENT
    if isinstance(exc, ValueError | KeyError | TypeError | LookupError | UnicodeError):
        return ErrorClass.PERMANENT
    return ErrorClass.UNKNOWN
