"""Running the handler over items: isolation, in-place retries, failure and reject records.

An item's exception never fails its batch: transient errors are retried in place up to
``retry.item_attempts`` times, and every other outcome becomes a failure record with its
class, exception type, message and a traceback excerpt.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import ClassRule, classify
from shardflow.models import Batch, ErrorClass
from shardflow.security.redact import Redactor
from shardflow.worker.context import TaskContext
from shardflow.worker.handler import LoadedHandler, Output, check_output
from shardflow.worker.isolation import IsolatedHandler, RemoteItemError, alarm


class Chunk:
    """Rows, failure records and counts gathered since the last checkpoint."""

    __slots__ = ("failed", "failures", "keys", "rejected", "rows", "succeeded")

    def __init__(self) -> None:
        # rows and their item keys side by side: the key becomes a column when the chunk
        # is saved, so the handler's dicts are stored as returned, never copied
        self.rows: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self.failures: list[dict[str, Any]] = []
        self.succeeded = 0
        self.failed = 0
        self.rejected = 0


class ItemRunner:
    def __init__(
        self,
        *,
        handler: LoadedHandler,
        policy: RetryPolicy,
        rules: tuple[ClassRule, ...],
        key_column: str,
        task_id: str,
        attempt: int,
        sleep: Callable[[float], None],
        item_timeout: float | None = None,
        secret_fields: Sequence[str] = (),
    ) -> None:
        # an isolated handler enforces the timeout itself (it can kill its process)
        self.item_timeout = None if isinstance(handler, IsolatedHandler) else item_timeout
        # per-item functions are called directly on the hot path; the rest go through
        # LoadedHandler.run_one, which checks what they return
        self.process = handler.process if not handler.per_batch else handler.run_one
        self.handler = handler
        self.policy = policy
        self.rules = rules
        self.key_column = key_column
        self.task_id = task_id
        self.attempt = attempt
        self.sleep = sleep
        # failure records are stored and shown: mask the job's secret fields of the
        # failing record, secret environment values and credential patterns
        self.secret_fields = tuple(secret_fields)
        self.redactor = Redactor.from_environ()

    def run_item(
        self,
        chunk: Chunk,
        batch: Batch,
        line: int,
        key: str,
        value: dict[str, Any],
        ctx: TaskContext,
    ) -> None:
        """Run the handler on one item; never raises for the item's own failure."""
        if self.item_timeout is not None:
            self._slow_item(chunk, batch, line, key, value, ctx, tries=0)
            return
        try:  # the fast path: one call, one type check
            out = self.process(value, ctx)
            if type(out) is not dict:
                out = check_output(out)
        except Exception as exc:
            self.failed_item(chunk, batch, line, key, value, ctx, exc)
            return
        if type(out) is dict:
            chunk.rows.append(out)
            chunk.keys.append(key)
            chunk.succeeded += 1
        else:
            self.add_output(chunk, key, out)

    def failed_item(
        self,
        chunk: Chunk,
        batch: Batch,
        line: int,
        key: str,
        value: dict[str, Any],
        ctx: TaskContext,
        exc: Exception,
    ) -> None:
        cls = exc.error_class if isinstance(exc, RemoteItemError) else classify(exc, self.rules)
        if self.policy.should_retry_item(cls, 1):
            self.sleep(0.1)
            self._slow_item(chunk, batch, line, key, value, ctx, tries=1)
            return
        chunk.failures.append(self.failure_record(batch, line, key, exc, cls, value))
        chunk.failed += 1

    def _slow_item(
        self,
        chunk: Chunk,
        batch: Batch,
        line: int,
        key: str,
        value: dict[str, Any],
        ctx: TaskContext,
        tries: int,
    ) -> None:
        while True:
            tries += 1
            try:
                with alarm(self.item_timeout):
                    out = self.handler.run_one(value, ctx)
            except Exception as exc:
                cls = (
                    exc.error_class
                    if isinstance(exc, RemoteItemError)
                    else classify(exc, self.rules)
                )
                if self.policy.should_retry_item(cls, tries):
                    self.sleep(min(1.0, 0.05 * 2**tries))
                    continue
                chunk.failures.append(self.failure_record(batch, line, key, exc, cls, value))
                chunk.failed += 1
                return
            self.add_output(chunk, key, out)
            return

    def run_pending(
        self,
        chunk: Chunk,
        batch: Batch,
        pending: list[tuple[int, int, str, dict[str, Any]]],
        ctx: TaskContext,
    ) -> None:
        if not pending:
            return
        try:
            outs = self.handler.run_batch([p[3] for p in pending], ctx)
        except Exception:
            # isolate the failing item: re-run the chunk one record at a time
            for _, line, key, value in pending:
                self.run_item(chunk, batch, line, key, value, ctx)
        else:
            for (_, _, key, _), out in zip(pending, outs, strict=True):
                self.add_output(chunk, key, out)
        pending.clear()

    def add_unchecked(self, chunk: Chunk, batch: Batch, line: int, key: str, out: object) -> None:
        """Add a handler output that is not a plain dict, after checking its shape."""
        try:
            checked = check_output(out)
        except TypeError as exc:
            chunk.failures.append(self.failure_record(batch, line, key, exc, ErrorClass.PERMANENT))
            chunk.failed += 1
            return
        self.add_output(chunk, key, checked)

    def add_output(self, chunk: Chunk, key: str, out: Output) -> None:
        if isinstance(out, dict):
            chunk.rows.append(out)
            chunk.keys.append(key)
        elif out:
            chunk.rows.extend(out)
            chunk.keys.extend([key] * len(out))
        chunk.succeeded += 1

    def failure_record(
        self,
        batch: Batch,
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
            "source": batch.source,
            "line": line,
        }

    def reject_record(
        self, batch: Batch, line: int, reason: str, raw: str | None
    ) -> dict[str, Any]:
        return {
            "key": None,
            "kind": "rejected",
            "error_class": "rejected",
            "exception": None,
            "message": reason if raw is None else f"{reason}: {raw[:200]}",
            "traceback": None,
            "attempt": self.attempt,
            "task_id": self.task_id,
            "source": batch.source,
            "line": line,
        }
