"""The handler's ``ctx`` in isolation mode (``worker.isolation: true``): the handler runs in
a child process, and its ``ctx`` has the attempt's ids, while ``ctx.acquire``,
``ctx.report_throttled``, ``ctx.should_stop`` and ``ctx.metric`` are served by the
worker's own limiter, stop flag and context, over the real pipe to a real child."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardflow.errors import ConfigError, ConflictError, StopRequested
from shardflow.models import ErrorClass
from shardflow.worker.context import RateLimiter, TaskContext
from shardflow.worker.isolation import IsolatedHandler, RemoteItemError

HANDLER = """
    import threading

    def handle(record, ctx):
        if record.get("threads"):  # a handler that calls its API from a thread pool
            answers = []
            def call():
                ctx.acquire("api", 1)
                answers.append(ctx.should_stop())
            pool = [threading.Thread(target=call) for _ in range(record["threads"])]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            return {"id": record["id"], "answers": answers}
        ctx.metric("calls", 1)
        ctx.acquire("api", 2)
        if record.get("throttle"):
            ctx.report_throttled("api")
        if record.get("limited"):
            @ctx.limited("api")
            def call_api():
                return 42
            return {"id": record["id"], "v": call_api() + call_api()}
        if record.get("who"):
            who = f"{ctx.task_id}#{ctx.attempt}"
            return {"id": record["id"], "task": who, "stop": ctx.should_stop()}
        return {"id": record["id"]}
"""


class RecordingLimiter(RateLimiter):
    """The worker's limiter as the parent sees it: records calls, raises ``error``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        self.calls.append(("acquire", name, tokens, timeout))
        if self.error is not None:
            raise self.error

    def report_throttled(self, name: str) -> None:
        self.calls.append(("throttled", name))


def context(limiter: RateLimiter, task_id: str = "t000001", stop: bool = False) -> TaskContext:
    return TaskContext(
        job_id="j",
        task_id=task_id,
        batch_id="b000001",
        attempt=1,
        slot="s",
        logger=logging.getLogger("shardflow.handler"),
        limiter=limiter,
        should_stop=lambda: stop,
    )


def isolated(tmp_path: Path, timeout: float | None) -> Iterator[IsolatedHandler]:
    (tmp_path / "limits_iso.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    handler = IsolatedHandler("limits_iso.py:handle", tmp_path, (), timeout)
    try:
        yield handler
    finally:
        handler.close()


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[IsolatedHandler]:
    yield from isolated(tmp_path, None)


def test_the_worker_limiter_and_context_serve_the_isolated_handler(
    handler: IsolatedHandler,
) -> None:
    limiter = RecordingLimiter()
    ctx = context(limiter)
    assert handler.process({"id": 1, "throttle": True}, ctx) == {"id": 1}
    assert handler.process({"id": 2}, ctx) == {"id": 2}
    assert limiter.calls == [
        ("acquire", "api", 2.0, None),
        ("throttled", "api"),
        ("acquire", "api", 2.0, None),
    ]
    assert ctx.metrics == {"calls": 2.0}  # the attempt's metrics, not the child's


def test_the_item_timeout_bounds_the_wait_for_tokens(tmp_path: Path) -> None:
    limiter = RecordingLimiter()
    for handler in isolated(tmp_path, 30.0):
        assert handler.process({"id": 1}, context(limiter)) == {"id": 1}
    (_, _, _, timeout) = limiter.calls[0]
    assert 20.0 < timeout <= 30.0


@pytest.mark.parametrize(
    ("error", "raised_as"),
    [
        (TimeoutError("rate limit 'api': no tokens within 1s"), "TimeoutError"),
        (ConfigError("rate limit 'api' is not configured"), "ConfigError"),
        (ConflictError("the bucket row kept changing"), "StoreError"),
        (RuntimeError("something else"), "RuntimeError"),
    ],
)
def test_a_limiter_error_is_raised_in_the_child_and_fails_only_that_item(
    handler: IsolatedHandler, error: Exception, raised_as: str
) -> None:
    limiter = RecordingLimiter()
    limiter.error = error
    ctx = context(limiter)
    with pytest.raises(RemoteItemError) as info:
        handler.process({"id": 1}, ctx)
    assert (info.value.exc_type, str(info.value)) == (raised_as, str(error))
    if raised_as == "TimeoutError":
        assert info.value.error_class is ErrorClass.TRANSIENT
    limiter.error = None  # the same child serves the next item
    pid = handler._proc.pid
    assert handler.process({"id": 2}, ctx) == {"id": 2}
    assert handler._proc.pid == pid


def test_a_stop_while_the_worker_waits_for_tokens_abandons_the_item_and_its_child(
    handler: IsolatedHandler,
) -> None:
    limiter = RecordingLimiter()
    ctx = context(limiter)
    assert handler.process({"id": 1}, ctx) == {"id": 1}
    first = handler._proc
    limiter.error = StopRequested("stopped while waiting for rate limit 'api'")
    with pytest.raises(StopRequested):
        handler.process({"id": 2}, ctx)
    assert handler._proc is None
    # its pipe was closed: it abandoned the item and exited on its own, not killed
    assert first.exitcode == 0
    limiter.error = None
    assert handler.process({"id": 3}, ctx) == {"id": 3}  # a new child for the next attempt


def test_the_child_ctx_knows_the_attempt_and_asks_the_worker_whether_to_stop(
    handler: IsolatedHandler,
) -> None:
    limiter = RecordingLimiter()
    first = handler.process({"id": 1, "who": True}, context(limiter, "t000001"))
    assert first == {"id": 1, "task": "t000001#1", "stop": False}
    # the same child, a new attempt: the ids follow, and so does the stop flag
    later = handler.process({"id": 2, "who": True}, context(limiter, "t000002", stop=True))
    assert later == {"id": 2, "task": "t000002#1", "stop": True}


def test_requests_from_the_handlers_threads_each_get_their_own_answer(
    handler: IsolatedHandler,
) -> None:
    limiter = RecordingLimiter()
    out = handler.process({"id": 1, "threads": 8}, context(limiter))
    assert out == {"id": 1, "answers": [False] * 8}
    assert limiter.calls == [("acquire", "api", 1.0, None)] * 8


def test_calls_through_ctx_limited_in_the_child_count_for_the_attempt(
    handler: IsolatedHandler,
) -> None:
    limiter = RecordingLimiter()
    ctx = context(limiter)
    assert handler.process({"id": 1, "limited": True}, ctx) == {"id": 1, "v": 84}
    assert ctx.api["api_calls"] == 2  # api_calls / api_ms of the attempt's metrics
    assert [c[0] for c in limiter.calls].count("acquire") == 3  # 1 + one per limited call
