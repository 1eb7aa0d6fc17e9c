"""Guards around the handler call: a per-item timeout, and an isolation mode.

Without isolation, ``worker.item_timeout`` is enforced with ``SIGALRM`` in the worker's
main thread: a handler stuck in Python code gets an :class:`ItemTimeout`. Code stuck in
C (or a segfault, or memory exhaustion) can only be contained by isolation:
``worker.isolation: true`` runs the handler in a child process, one item at a time over a
pipe; a child that overruns the timeout is killed, a child that dies is restarted, and
only the item in flight fails. Items cross the pipe as JSON (never pickle).

The child's ``ctx`` is a :class:`~shardflow.worker.context.TaskContext` like the worker's:
the worker sends the attempt's ids before the first item of each attempt, and items as
``{"item": record}``. ``ctx.acquire`` and ``ctx.should_stop()`` ask the worker and wait
for its answer (its rate limiter and stop flag: the limit holds in isolation mode too,
and the limiter's errors are raised in the child), ``ctx.report_throttled`` is sent one
way, and the item's ``ctx.metric`` values come back with its reply. The time an item
waits for tokens counts towards its timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import signal
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import orjson

from shardflow.errors import (
    ClassRule,
    ConfigError,
    InfrastructureError,
    NotFoundError,
    StoreError,
    classify,
)
from shardflow.models import ErrorClass
from shardflow.worker.context import RateLimiter, TaskContext
from shardflow.worker.handler import LoadedHandler, Output, load_handler


class ItemTimeout(TimeoutError):
    """The handler did not finish an item within ``worker.item_timeout``."""


class HandlerCrashed(InfrastructureError):
    """The isolated handler process died (segfault, out of memory, os._exit)."""


class RemoteItemError(Exception):
    """An item's exception raised in the isolated child, already classified there."""

    def __init__(self, error_class: ErrorClass, exc_type: str, message: str, tb: str) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.exc_type = exc_type
        self.tb = tb


@contextlib.contextmanager
def alarm(seconds: float | None) -> Iterator[None]:
    """Raise :class:`ItemTimeout` in this (main) thread after ``seconds``."""
    if not seconds:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise ItemTimeout(f"item took longer than {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _child(conn: Connection, spec: str, base_dir: str, rules: list[dict[str, Any]]) -> None:
    # the parent decides when to stop: a Ctrl-C or SIGTERM must not fail the item in flight
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from shardflow.observability.logging import configure_logging

    configure_logging("INFO", json=True)  # the handler's own log lines, redacted like any
    class_rules = tuple(
        ClassRule(
            ErrorClass(r["error_class"]),
            tuple(r["exceptions"]),
            r["message"],
            tuple(r["http_status"]),
        )
        for r in rules
    )
    handler = load_handler(spec, Path(base_dir))
    ctx, started = _child_context(conn), False
    while True:
        try:
            message = orjson.loads(conn.recv_bytes())
        except EOFError:
            break
        if "ctx" in message:  # the next items belong to this attempt
            ctx = dataclasses.replace(ctx, **message["ctx"], metrics={})
            if not started and handler.setup is not None:
                # as in the slot: the job's and slot's ids, no task
                handler.setup(dataclasses.replace(ctx, task_id="", batch_id="", attempt=0))
            started = True
            continue
        try:
            reply: dict[str, Any] = {"ok": handler.run_one(message["item"], ctx)}
        except Exception as exc:
            reply = {
                "error_class": classify(exc, class_rules).value,
                "exc_type": type(exc).__qualname__,
                "message": str(exc)[:1000],
                "tb": "".join(traceback.format_exception(exc)[-3:])[-2000:],
            }
        reply["metrics"], ctx.metrics = ctx.metrics, {}
        conn.send_bytes(orjson.dumps(reply))
    if started and handler.teardown is not None:
        handler.teardown(dataclasses.replace(ctx, task_id="", batch_id="", attempt=0))


TEARDOWN_GRACE = 10.0
"""Seconds the isolated child gets for the handler's teardown when the worker closes it."""
# what the child's ctx is told of the attempt (TaskContext fields)
_CTX_IDS = ("job_id", "task_id", "batch_id", "attempt", "slot")
# the errors of the worker's ``ctx.acquire`` that are raised again in the child, by name
_ACQUIRE_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (TimeoutError, ValueError, ConfigError, NotFoundError, StoreError)
}


def _acquire(ctx: Any, request: dict[str, Any], left: float | None) -> dict[str, Any]:
    """Serve the child's ``ctx.acquire`` with the worker's limiter: the answer to send."""
    timeout = request["timeout"]
    if left is not None:  # the item's timeout bounds its wait for tokens too
        timeout = left if timeout is None else min(timeout, left)
    try:
        ctx.acquire(request["acquire"], request["tokens"], timeout)
    except Exception as exc:
        name = next((n for n, e in _ACQUIRE_ERRORS.items() if isinstance(exc, e)), "")
        # a ConfigError is made again from its text, which must not repeat "<config>: "
        text = "\n".join(p.message for p in exc.problems) if isinstance(exc, ConfigError) else ""
        return {"raise": name, "message": text or str(exc)}
    return {"granted": True}


def _ask(conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
    conn.send_bytes(orjson.dumps(request))
    return cast(dict[str, Any], orjson.loads(conn.recv_bytes()))


class _PipeLimiter(RateLimiter):
    """The child's rate limiter: the worker's, over the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        answer = _ask(self._conn, {"acquire": name, "tokens": tokens, "timeout": timeout})
        if "raise" in answer:
            raise _ACQUIRE_ERRORS.get(answer["raise"], RuntimeError)(answer["message"])

    def report_throttled(self, name: str) -> None:
        self._conn.send_bytes(orjson.dumps({"throttled": name}))


def _child_context(conn: Connection) -> TaskContext:
    """The handler's ``ctx`` in the child, before the worker has said which attempt."""
    import logging

    return TaskContext(
        job_id="",
        task_id="",
        batch_id="",
        attempt=0,
        slot="",
        logger=logging.getLogger("shardflow.handler"),
        limiter=_PipeLimiter(conn),
        should_stop=lambda: bool(_ask(conn, {"should_stop": True})["stop"]),
    )


class IsolatedHandler(LoadedHandler):
    """A :class:`LoadedHandler` whose calls run in a child process, one item at a time."""

    def __init__(
        self, spec: str, base_dir: Path, rules: tuple[ClassRule, ...], timeout: float | None
    ) -> None:
        super().__init__(name=spec, per_batch=False, process=self._call)
        self._args = (
            spec,
            str(base_dir),
            [
                {
                    "error_class": r.error_class.value,
                    "exceptions": list(r.exceptions),
                    "message": r.message,
                    "http_status": list(r.http_status),
                }
                for r in rules
            ],
        )
        self._timeout = timeout
        self._proc: Any = None
        self._conn: Connection | None = None
        self._sent_ids: dict[str, Any] | None = None  # the attempt the child knows

    def _start(self) -> Connection:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, *self._args), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        return parent

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = self._sent_ids = None

    def _call(self, record: dict[str, Any], ctx: Any) -> Output:
        conn = self._conn or self._start()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        try:
            ids = {f: getattr(ctx, f) for f in _CTX_IDS}
            if ids != self._sent_ids:
                self._send(conn, orjson.dumps({"ctx": ids}))
                self._sent_ids = ids
            self._send(conn, orjson.dumps({"item": record}))
            reply = self._reply(conn, ctx, deadline)
        except BaseException:
            # a timeout, a dead child, or a stop while serving its ctx.acquire: the
            # child is in an unknown state, so the next item gets a new one
            self._kill()
            raise
        if "ok" in reply:
            out: Output = reply["ok"]
            return out
        raise RemoteItemError(
            ErrorClass(reply["error_class"]), reply["exc_type"], reply["message"], reply["tb"]
        )

    def _reply(self, conn: Connection, ctx: Any, deadline: float | None) -> dict[str, Any]:
        """The item's reply, serving the child's ``ctx`` requests until it comes."""
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = orjson.loads(conn.recv_bytes()) if conn.poll(left) else None
            except (EOFError, OSError) as exc:
                code = self._proc.exitcode if self._proc is not None else None
                raise HandlerCrashed(f"the handler process died (exit code {code})") from exc
            if message is None:
                raise ItemTimeout(
                    f"item took longer than {self._timeout:g}s (handler process killed)"
                )
            if "throttled" in message:
                ctx.report_throttled(message["throttled"])
            elif "acquire" in message:
                self._send(conn, orjson.dumps(_acquire(ctx, message, left)))
            elif "should_stop" in message:
                self._send(conn, orjson.dumps({"stop": bool(ctx.should_stop())}))
            else:
                for name, value in message.pop("metrics", {}).items():
                    ctx.metric(name, value)
                return cast(dict[str, Any], message)

    @staticmethod
    def _send(conn: Connection, data: bytes) -> None:
        try:
            conn.send_bytes(data)
        except OSError as exc:
            raise HandlerCrashed("the isolated handler process is gone") from exc

    def close(self) -> None:
        """Close the pipe: the child runs the handler's teardown and exits (killed if it
        has not within :data:`TEARDOWN_GRACE` seconds)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout=TEARDOWN_GRACE)
        self._kill()
