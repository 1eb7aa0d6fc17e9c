"""Guards around the handler call: a per-item timeout, and an isolation mode.

Without isolation, ``worker.item_timeout`` is enforced with ``SIGALRM`` in the worker's
main thread: a handler stuck in Python code gets an :class:`ItemTimeout`. Code stuck in
C (or a segfault, or memory exhaustion) can only be contained by isolation:
``worker.isolation: true`` runs the handler in a child process, one item at a time over a
pipe; a child that overruns the timeout is killed, a child that dies is restarted, and
only the item in flight fails. Items cross the pipe as JSON (never pickle).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from shardflow.errors import ClassRule, InfrastructureError, classify
from shardflow.models import ErrorClass
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
    if handler.setup is not None:
        handler.setup(None)
    ctx = _ChildContext()
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            break
        record = orjson.loads(data)
        try:
            out = handler.run_one(record, ctx)
            conn.send_bytes(orjson.dumps({"ok": out}))
        except Exception as exc:
            conn.send_bytes(
                orjson.dumps(
                    {
                        "error_class": classify(exc, class_rules).value,
                        "exc_type": type(exc).__qualname__,
                        "message": str(exc)[:1000],
                        "tb": "".join(traceback.format_exception(exc)[-3:])[-2000:],
                    }
                )
            )
    if handler.teardown is not None:
        handler.teardown(None)


class _ChildContext:
    """What a handler's ``ctx`` offers inside the isolated child (metrics stay there)."""

    def __init__(self) -> None:
        import logging

        self.logger = logging.getLogger("shardflow.handler")
        self.metrics: dict[str, float] = {}

    def metric(self, name: str, value: float) -> None:
        self.metrics[name] = self.metrics.get(name, 0.0) + float(value)

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        return None

    def report_throttled(self, name: str) -> None:
        return None


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
        self._proc = self._conn = None

    def _call(self, record: dict[str, Any], ctx: Any) -> Output:
        conn = self._conn or self._start()
        try:
            conn.send_bytes(orjson.dumps(record))
            ready = conn.poll(self._timeout)
        except (BrokenPipeError, OSError) as exc:
            self._kill()
            raise HandlerCrashed("the isolated handler process is gone") from exc
        if not ready:
            self._kill()
            raise ItemTimeout(f"item took longer than {self._timeout:g}s (handler process killed)")
        try:
            reply = orjson.loads(conn.recv_bytes())
        except (EOFError, OSError) as exc:
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            raise HandlerCrashed(f"the handler process died (exit code {code})") from exc
        if "ok" in reply:
            out: Output = reply["ok"]
            return out
        raise RemoteItemError(
            ErrorClass(reply["error_class"]), reply["exc_type"], reply["message"], reply["tb"]
        )

    def close(self) -> None:
        self._kill()
