"""Guards around the handler call: a per-item timeout, and an isolation mode.

Without isolation, ``worker.item_timeout`` is enforced with ``SIGALRM`` in the worker's
main thread: a handler stuck in Python code gets an :class:`ItemTimeout`. Code stuck in
C (or a segfault, or memory exhaustion) can only be contained by isolation:
``worker.isolation: true`` runs the handler in a child process, one item at a time over a
pipe; a child that overruns the timeout is killed, a child that dies is restarted, and
only the item in flight fails. Items cross the pipe as JSON (never pickle).

The child's ``ctx`` is a :class:`~shardflow.worker.context.TaskContext` like the worker's
(the protocol is in :mod:`shardflow.worker.isolated_child`): ``ctx.acquire`` and
``ctx.should_stop()`` are answered here by the worker's rate limiter and stop flag (the
limit holds in isolation mode too, and the limiter's errors are raised in the child),
and the item's ``ctx.metric`` values come back with its reply. The time an item waits
for tokens counts towards its timeout. A worker told to stop while serving an acquire
closes the child's pipe: the child abandons the item, runs teardown and exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import orjson

from shardflow.errors import ClassRule, ConfigError, InfrastructureError, StopRequested
from shardflow.models import ErrorClass
from shardflow.worker.handler import LoadedHandler, Output
from shardflow.worker.isolated_child import ACQUIRE_ERRORS, CTX_IDS, child_main


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


TEARDOWN_GRACE = 10.0
"""Seconds the isolated child gets for the handler's teardown when the worker closes it."""


def _acquire(ctx: Any, request: dict[str, Any], left: float | None) -> dict[str, Any]:
    """Serve the child's ``ctx.acquire`` with the worker's limiter: the answer to send."""
    timeout = request["timeout"]
    if left is not None:  # the item's timeout bounds its wait for tokens too
        timeout = left if timeout is None else min(timeout, left)
    try:
        ctx.acquire(request["acquire"], request["tokens"], timeout)
    except Exception as exc:
        name = next((n for n, e in ACQUIRE_ERRORS.items() if isinstance(exc, e)), "")
        # a ConfigError is made again from its text, which must not repeat "<config>: "
        text = "\n".join(p.message for p in exc.problems) if isinstance(exc, ConfigError) else ""
        return {"raise": name, "message": text or str(exc)}
    return {"granted": True}


class IsolatedHandler(LoadedHandler):
    """A :class:`LoadedHandler` whose calls run in a child process, one item at a time."""

    def __init__(
        self, spec: str, base_dir: Path, rules: tuple[ClassRule, ...], timeout: float | None
    ) -> None:
        super().__init__(name=spec, per_batch=False, process=self._call, setup=self._setup)
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
        self._proc = ctx.Process(target=child_main, args=(child, *self._args), daemon=True)
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

    def _setup(self, ctx: Any) -> None:
        """Start the child and run the handler's setup in it now, as a slot does without
        isolation: a setup that fails stops the slot (HandlerCrashed says why) instead of
        failing every item in a new child."""
        try:
            self._hello(self._conn or self._start(), ctx)
        except BaseException:
            self._kill()
            raise

    def _hello(self, conn: Connection, ctx: Any) -> None:
        """Tell the child whose ctx it has (the slot's, then each attempt's) unless it
        knows; it answers once ready, its setup done (never timed as an item)."""
        ids = {f: getattr(ctx, f) for f in CTX_IDS}
        if ids != self._sent_ids:
            self._send(conn, {"ctx": ids})
            self._reply(conn, ctx, None)
            self._sent_ids = ids

    def _call(self, record: dict[str, Any], ctx: Any) -> Output:
        conn = self._conn or self._start()  # a new child after a crash sets up again
        try:
            self._hello(conn, ctx)
            deadline = None if self._timeout is None else time.monotonic() + self._timeout
            self._send(conn, {"item": record})
            reply = self._reply(conn, ctx, deadline)
        except StopRequested:
            self.close()  # the child abandons the item, tears down and exits
            raise
        except BaseException:
            self._kill()  # a timeout or a dead child: the next item gets a new one
            raise
        if "ok" in reply:
            out: Output = reply["ok"]
            return out
        raise RemoteItemError(
            ErrorClass(reply["error_class"]), reply["exc_type"], reply["message"], reply["tb"]
        )

    def _reply(self, conn: Connection, ctx: Any, deadline: float | None) -> dict[str, Any]:
        """The item's reply (or the child's ``ready``), serving the child's ``ctx``
        requests until it comes."""

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        while True:
            try:
                message = orjson.loads(conn.recv_bytes()) if conn.poll(left()) else None
            except (EOFError, OSError) as exc:
                if self._proc is not None:
                    self._proc.join(timeout=1.0)  # reaped, so that its exit code is known
                code = self._proc.exitcode if self._proc is not None else None
                raise HandlerCrashed(f"the handler process died (exit code {code})") from exc
            if message is None:
                raise ItemTimeout(
                    f"item took longer than {self._timeout:g}s (handler process killed)"
                )
            if "throttled" in message:
                ctx.report_throttled(message["throttled"])
            elif "acquire" in message:
                self._send(conn, {"answer": _acquire(ctx, message, left())})
            elif "should_stop" in message:
                self._send(conn, {"answer": {"stop": bool(ctx.should_stop())}})
            elif "setup_error" in message:
                raise HandlerCrashed(
                    f"the handler's setup failed in its isolated process: {message['setup_error']}"
                )
            else:
                for name, value in message.pop("metrics", {}).items():
                    ctx.metric(name, value)
                api = message.pop("api", {})
                if api:
                    ctx.count_api(api.get("api_calls", 0.0), api.get("api_ms", 0.0))
                return cast(dict[str, Any], message)

    @staticmethod
    def _send(conn: Connection, message: dict[str, Any]) -> None:
        try:
            conn.send_bytes(orjson.dumps(message))
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
