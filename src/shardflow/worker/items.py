"""Running the handler over items: the one item loop, in-place retries, failure and
reject records.

:meth:`ItemRunner.run_chunk` is the only loop over a batch's records: the attempt calls it
once per chunk (the items between two checkpoints), and every record goes through the same
steps whatever the handler's form. An item's exception never fails its batch: it is
classified (``retry.rules`` first), transient errors are retried in place up to
``retry.item_attempts`` times, and every other outcome becomes a failure record with its
class, exception type, message and a traceback excerpt. A handler output that is not a
dict, a list of dicts or None is a ``TypeError`` of its item, classified like any other.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import ClassRule, classify
from shardflow.models import Batch, ErrorClass
from shardflow.security.redact import Redactor
from shardflow.split.spec import Record
from shardflow.worker.context import TaskContext
from shardflow.worker.handler import LoadedHandler, Output, check_output
from shardflow.worker.isolation import IsolatedHandler, RemoteItemError, alarm

#: why :meth:`ItemRunner.run_chunk` returned
DONE, CHECKPOINT, STOP = "done", "checkpoint", "stop"


class Chunk:
    """Rows, failure records and counts gathered since the last checkpoint.

    ``last`` is the ordinal of the last record taken from the batch: every record up to it
    is accounted for in this chunk or in the checkpoint before it.
    """

    __slots__ = ("failed", "failures", "keys", "last", "rejected", "rows", "succeeded")

    def __init__(self, last: int = -1) -> None:
        # rows and their item keys side by side: the key becomes a column when the chunk
        # is saved, so the handler's dicts are stored as returned, never copied
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.failures: list[dict[str, Any]] = []
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0
        self.last = last


class ItemRunner:
    """Runs one slot's handler over the records of its attempts.

    Built once per slot; :meth:`start` names the attempt whose records come next (its task,
    attempt number and batch go into failure records).
    """

    def __init__(
        self,
        *,
        handler: LoadedHandler,
        policy: RetryPolicy,
        rules: tuple[ClassRule, ...],
        sleep: Callable[[float], None],
        item_timeout: float | None = None,
        secret_fields: Sequence[str] = (),
        id_field: str | None = None,
        check_every: int = 256,
    ) -> None:
        # an isolated handler enforces the timeout itself (it can kill its process)
        self.item_timeout = None if isinstance(handler, IsolatedHandler) else item_timeout
        self.handler = handler
        self.policy = policy
        self.rules = rules
        self.sleep = sleep
        self.id_field = id_field
        # the stop flag and the clock are looked at every `mask + 1` items, not every item
        self.mask = _mask(check_every)
        # failure records are stored and shown: mask the job's secret fields of the
        # failing record, secret environment values and credential patterns
        self.secret_fields = tuple(secret_fields)
        self.redactor = Redactor.from_environ()
        self.task_id = ""
        self.attempt = 0
        self.batch: Batch | None = None

    def start(self, task_id: str, attempt: int, batch: Batch) -> None:
        self.task_id, self.attempt, self.batch = task_id, attempt, batch

    # -- the loop ------------------------------------------------------------------------

    def run_chunk(
        self,
        records: Iterator[Record],
        chunk: Chunk,
        ctx: TaskContext,
        due: Callable[[int], str | None] = lambda count: None,
    ) -> str:
        """Run records from ``records`` into ``chunk`` until the batch ends (:data:`DONE`),
        or ``due(count)`` asks for a :data:`CHECKPOINT` or a :data:`STOP`; ``due`` is asked
        every few hundred items (every 16 with a small ``worker.checkpoint_every``).

        A per-batch handler gets the chunk's records in one call before this returns. Raises
        :class:`~shardflow.errors.StopRequested` if the handler was stopped while it waited
        for rate-limit tokens (the chunk is then incomplete and must be dropped).
        """
        batch = self.batch
        assert batch is not None
        per_batch, timed = self.handler.per_batch, self.item_timeout is not None
        process = self.handler.process
        batch_id, id_field, mask = batch.batch_id, self.id_field, self.mask
        rows, keys = chunk.rows, chunk.keys
        pending: list[tuple[int, str, dict[str, Any]]] = []
        why = DONE
        for count, (ordinal, line, value, error, raw) in enumerate(records, 1):
            chunk.last = ordinal
            if value is None:
                chunk.failures.append(self.reject_record(line, error or "malformed", raw))
                chunk.rejected += 1
            else:
                if id_field is None:
                    key: str | None = f"{batch_id}:{ordinal}"
                else:
                    ident = value.get(id_field)
                    key = None if ident is None else ident if type(ident) is str else str(ident)
                if key is None:
                    reason = f"missing id field {id_field!r}"
                    chunk.failures.append(self.reject_record(line, reason, None))
                    chunk.rejected += 1
                elif per_batch:
                    pending.append((line, key, value))
                elif timed:
                    self._retrying(chunk, line, key, value, ctx, tries=0)
                else:
                    try:
                        out = process(value, ctx)
                    except Exception as exc:
                        self._failed(chunk, line, key, value, ctx, exc)
                    else:
                        if type(out) is dict:
                            rows.append(out)
                            keys.append(key)
                            chunk.succeeded += 1
                        else:
                            self._add_checked(chunk, line, key, value, ctx, out)
            if not count & mask:
                stop = due(count)
                if stop is not None:
                    why = stop
                    break
        self._run_pending(chunk, pending, ctx)
        return why

    # -- one item --------------------------------------------------------------------------

    def _add_checked(
        self,
        chunk: Chunk,
        line: int,
        key: str,
        value: dict[str, Any],
        ctx: TaskContext,
        out: object,
    ) -> None:
        """An output that is not a plain dict: checked, else a TypeError of the item."""
        try:
            checked = check_output(out)
        except TypeError as exc:
            self._failed(chunk, line, key, value, ctx, exc)
            return
        self._add_output(chunk, key, checked)

    def _failed(
        self,
        chunk: Chunk,
        line: int,
        key: str,
        value: dict[str, Any],
        ctx: TaskContext,
        exc: Exception,
    ) -> None:
        """The item's first try raised: retry it in place if transient, else record it."""
        cls = _class_of(exc, self.rules)
        if self.policy.should_retry_item(cls, 1):
            self.sleep(0.1)
            self._retrying(chunk, line, key, value, ctx, tries=1)
            return
        chunk.failures.append(self.failure_record(line, key, exc, cls, value))
        chunk.failed += 1

    def _retrying(
        self,
        chunk: Chunk,
        line: int,
        key: str,
        value: dict[str, Any],
        ctx: TaskContext,
        tries: int,
    ) -> None:
        """Try the item (again) until it succeeds, or fails for good, under the timeout."""
        while True:
            tries += 1
            try:
                with alarm(self.item_timeout):
                    out = self.handler.run_one(value, ctx)
            except Exception as exc:
                cls = _class_of(exc, self.rules)
                if self.policy.should_retry_item(cls, tries):
                    self.sleep(min(1.0, 0.05 * 2**tries))
                    continue
                chunk.failures.append(self.failure_record(line, key, exc, cls, value))
                chunk.failed += 1
                return
            self._add_output(chunk, key, out)
            return

    def _run_pending(
        self, chunk: Chunk, pending: list[tuple[int, str, dict[str, Any]]], ctx: TaskContext
    ) -> None:
        """A per-batch handler's call for the chunk's records; if it raises, the records
        run one at a time, so that only the bad item fails."""
        if not pending:
            return
        try:
            outs = self.handler.run_batch([p[2] for p in pending], ctx)
        except Exception:
            for line, key, value in pending:
                self._retrying(chunk, line, key, value, ctx, tries=0)
        else:
            for (_line, key, _value), out in zip(pending, outs, strict=True):
                self._add_output(chunk, key, out)

    @staticmethod
    def _add_output(chunk: Chunk, key: str, out: Output) -> None:
        if isinstance(out, dict):
            chunk.rows.append(out)
            chunk.keys.append(key)
        elif out:
            chunk.rows.extend(out)
            chunk.keys.extend([key] * len(out))
        chunk.succeeded += 1

    # -- records ---------------------------------------------------------------------------

    def failure_record(
        self,
        line: int,
        key: str,
        exc: BaseException,
        cls: ErrorClass,
        value: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The failure record of an item; ``value`` is the failing record, whose secret
        fields are masked in the message and traceback."""
        if isinstance(exc, RemoteItemError):
            exc_type, tb = exc.exc_type, exc.tb
        else:
            exc_type, tb = type(exc).__qualname__, "".join(traceback.format_exception(exc)[-3:])
        redact = self.redactor.for_record(value, self.secret_fields).redact
        return {
            "key": key,
            "kind": "failed",
            "error_class": cls.value,
            "exception": exc_type,
            "message": redact(str(exc))[:1000],
            "traceback": redact(tb)[-2000:],
            "attempt": self.attempt,
            "task_id": self.task_id,
            "source": self.batch.source if self.batch else None,
            "line": line,
        }

    def reject_record(self, line: int, reason: str, raw: str | None) -> dict[str, Any]:
        return {
            "key": None,
            "kind": "rejected",
            "error_class": "rejected",
            "exception": None,
            "message": reason if raw is None else f"{reason}: {raw[:200]}",
            "traceback": None,
            "attempt": self.attempt,
            "task_id": self.task_id,
            "source": self.batch.source if self.batch else None,
            "line": line,
        }


def _class_of(exc: Exception, rules: tuple[ClassRule, ...]) -> ErrorClass:
    # an isolated child classified its item's exception itself (it had the exception)
    return exc.error_class if isinstance(exc, RemoteItemError) else classify(exc, rules)


def _mask(check_every: int) -> int:
    """How often (a power of two, minus one) the loop asks whether a checkpoint or a stop
    is due: every 256 items, or every 16 when checkpoints are due that often."""
    return 255 if check_every >= 1024 else 15
