"""The child process of ``worker.isolation: true``: runs the handler one item at a time.

The pipe protocol (JSON, never pickle). The worker sends ``{"ctx": ids}`` when the slot
starts and before the first item of each attempt; the child answers ``{"ready": true}``
(after running the handler's ``setup`` on the first one, outside any item's timeout) or
``{"setup_error": "Type: message"}`` if the handler cannot be loaded or set up. Then
``{"item": record}`` per item; the child replies with ``{"ok": output}`` or an error record
(an output JSON cannot carry is one), plus the item's ``metrics`` and ``api`` counts. While
it works, the child may ask ``{"acquire": …}`` or ``{"should_stop": true}`` and wait for
``{"answer": …}``, or tell ``{"throttled": name}``. Answers are tagged, and anything else
that arrives meanwhile is set aside for the main loop; requests from the handler's threads
are serialised.

The worker closing the pipe ends the child: it runs the handler's teardown and exits.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import orjson

from shardflow.errors import ClassRule, ConfigError, NotFoundError, StoreError, classify
from shardflow.models import ErrorClass
from shardflow.worker.context import RateLimiter, TaskContext
from shardflow.worker.handler import load_handler

# what the child's ctx is told of the attempt (TaskContext fields)
CTX_IDS = ("job_id", "task_id", "batch_id", "attempt", "slot")
# the errors of the worker's ``ctx.acquire`` that are raised again in the child, by name
ACQUIRE_ERRORS: dict[str, type[Exception]] = {
    e.__name__: e for e in (TimeoutError, ValueError, ConfigError, NotFoundError, StoreError)
}


class WorkerGone(BaseException):
    """The worker closed the pipe while the handler was asking it something: the item is
    abandoned (a BaseException, so that the handler's ``except Exception`` lets it by)."""


class _Pipe:
    """The child's end: requests and replies under one lock, other messages set aside."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.pending: deque[dict[str, Any]] = deque()

    def next_message(self) -> dict[str, Any]:
        """The next ``ctx`` or ``item`` message (EOFError once the worker closed)."""
        with self.lock:
            if self.pending:
                return self.pending.popleft()
            return cast(dict[str, Any], orjson.loads(self.conn.recv_bytes()))

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            try:
                self.conn.send_bytes(orjson.dumps(request))
                while True:
                    message = orjson.loads(self.conn.recv_bytes())
                    if "answer" in message:
                        return cast(dict[str, Any], message["answer"])
                    self.pending.append(message)
            except (EOFError, OSError) as exc:
                raise WorkerGone("the worker closed the pipe") from exc

    def tell(self, message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else orjson.dumps(message)
        with self.lock:
            try:
                self.conn.send_bytes(data)
            except OSError as exc:
                raise WorkerGone("the worker closed the pipe") from exc


class _PipeLimiter(RateLimiter):
    """The child's rate limiter: the worker's, over the pipe."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        answer = self._pipe.ask({"acquire": name, "tokens": tokens, "timeout": timeout})
        if "raise" in answer:
            raise ACQUIRE_ERRORS.get(answer["raise"], RuntimeError)(answer["message"])

    def report_throttled(self, name: str) -> None:
        self._pipe.tell({"throttled": name})


def _no_task(ctx: TaskContext) -> TaskContext:
    """``ctx`` as setup and teardown see it in the slot: the job and slot, no task."""
    return dataclasses.replace(ctx, task_id="", batch_id="", attempt=0)


def _error_reply(exc: Exception, rules: tuple[ClassRule, ...]) -> dict[str, Any]:
    return {
        "error_class": classify(exc, rules).value,
        "exc_type": type(exc).__qualname__,
        "message": str(exc)[:1000],
        "tb": "".join(traceback.format_exception(exc)[-3:])[-2000:],
    }


def _setup_error(pipe: _Pipe, exc: Exception) -> None:
    """Say why the handler cannot start (its traceback goes to the slot's log)."""
    logging.getLogger("shardflow.handler").error("the handler's setup failed", exc_info=exc)
    pipe.tell({"setup_error": f"{type(exc).__name__}: {exc}"[:1000]})


def child_main(conn: Connection, spec: str, base_dir: str, rules: list[dict[str, Any]]) -> None:
    """The child's loop (the process target); returns when the worker closes the pipe."""
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
    pipe = _Pipe(conn)
    try:
        handler = load_handler(spec, Path(base_dir))
    except Exception as exc:
        _setup_error(pipe, exc)
        return
    ctx = TaskContext(
        job_id="",
        task_id="",
        batch_id="",
        attempt=0,
        slot="",
        logger=logging.getLogger("shardflow.handler"),
        limiter=_PipeLimiter(pipe),
        should_stop=lambda: bool(pipe.ask({"should_stop": True})["stop"]),
    )
    started = False
    try:
        while True:
            message = pipe.next_message()
            if "ctx" in message:  # the next items belong to this attempt
                ctx = dataclasses.replace(ctx, **message["ctx"], metrics={}, api={})
                if not started and handler.setup is not None:
                    try:
                        handler.setup(_no_task(ctx))
                    except Exception as exc:
                        _setup_error(pipe, exc)
                        return
                started = True
                pipe.tell({"ready": True})
                continue
            counts = {"metrics": ctx.metrics, "api": ctx.api}
            try:
                reply = orjson.dumps({"ok": handler.run_one(message["item"], ctx), **counts})
            except Exception as exc:  # the handler's, or an output JSON cannot carry
                reply = orjson.dumps({**_error_reply(exc, class_rules), **counts})
            ctx.metrics, ctx.api = {}, {}
            pipe.tell(reply)
    except (EOFError, WorkerGone):
        pass  # the worker is done with this child (or stopped while the handler waited)
    finally:
        if started and handler.teardown is not None:
            # the worker no longer answers: teardown's ctx limits nothing and says "stop"
            handler.teardown(
                dataclasses.replace(_no_task(ctx), limiter=RateLimiter(), should_stop=lambda: True)
            )
