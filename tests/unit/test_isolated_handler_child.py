"""The isolated handler's child side (``worker.isolation: true``), driven in-process over a
socket pair: one reply per record, exceptions classed there with the job's rules, setup
with the job's and slot's ids before the first item, teardown when the worker closes the
pipe, and ``ctx.acquire``, ``ctx.should_stop`` and ``ctx.report_throttled`` as requests
to the worker.

This drives the child's loop in the test process, where its coverage is measured."""

from __future__ import annotations

import logging
import signal
import socket
import textwrap
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import pytest

from shardflow.worker.isolated_child import child_main

IDS = {
    "job_id": "job-1",
    "task_id": "t000007",
    "batch_id": "b000007",
    "attempt": 2,
    "slot": "slot-a",
}

HANDLER = """
    EVENTS = []

    class Enrich:
        def setup(self, ctx):
            # asks the worker while the first item is already on its way
            ctx.acquire("warm-up")
            EVENTS.append(f"setup {ctx.job_id}@{ctx.slot}#{ctx.task_id} {ctx.should_stop()}")

        def process(self, record, ctx):
            if record.get("fail") == "value":
                raise ValueError("bad email " + record["email"])
            if record.get("fail") == "quota":
                raise RuntimeError("quota exceeded")
            ctx.metric("calls", 1)
            ctx.acquire("api")
            ctx.report_throttled("api")
            ctx.logger.info("enriched %s", record["id"])
            return {
                "id": record["id"],
                "n": len(EVENTS),
                "task": f"{ctx.job_id}/{ctx.task_id}/{ctx.batch_id}#{ctx.attempt}@{ctx.slot}",
                "stop": ctx.should_stop(),
            }

        def teardown(self, ctx):
            EVENTS.append(f"teardown {ctx.job_id}@{ctx.slot}#{ctx.task_id}")
            with open(ctx_file(), "w") as f:
                f.write(",".join(EVENTS))

    def ctx_file():
        import os
        return os.path.join(os.path.dirname(__file__), "events.txt")
"""


@pytest.fixture
def restored_process_state() -> Iterator[None]:
    """_child ignores SIGINT/SIGTERM and configures logging, as the child process does."""
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    signal.signal(signal.SIGINT, sigint)
    signal.signal(signal.SIGTERM, sigterm)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _run_child(
    tmp_path: Path,
    records: list[dict[str, Any]],
    rules: list[dict[str, Any]],
    answer: dict[str, Any] | None = None,
) -> list[Any]:
    """Every message the child sent, in order. A thread plays the worker: it sends the
    attempt's ids and waits for ``ready``, then one record at a time, answering the child's
    ``ctx.acquire("api")`` with ``answer`` (granted by default, and always for other
    limits) and ``ctx.should_stop()`` with False. The child runs here, in the main thread,
    as its signal set-up requires."""
    (tmp_path / "enrich_iso.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    a, b = socket.socketpair()
    worker, child = Connection(a.detach()), Connection(b.detach())
    messages: list[Any] = []

    def serve() -> None:
        """Answer the child's requests until its reply (or ``ready``) comes."""
        while True:
            message = orjson.loads(worker.recv_bytes())
            messages.append(message)
            if "acquire" in message:
                given = answer if answer and message["acquire"] == "api" else None
                worker.send_bytes(orjson.dumps({"answer": given or {"granted": True}}))
            elif "should_stop" in message:
                worker.send_bytes(orjson.dumps({"answer": {"stop": False}}))
            elif "throttled" not in message:
                return

    def play_the_worker() -> None:
        worker.send_bytes(orjson.dumps({"ctx": IDS}))
        serve()  # setup runs; the child says it is ready
        for record in records:
            worker.send_bytes(orjson.dumps({"item": record}))
            serve()
        worker.close()  # the worker is done: the child sees EOF and tears down

    thread = threading.Thread(target=play_the_worker)
    thread.start()
    child_main(child, "enrich_iso.py:Enrich", str(tmp_path), rules)
    child.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return messages


@pytest.mark.usefixtures("restored_process_state")
def test_one_reply_per_record_with_errors_classed_in_the_child(tmp_path: Path) -> None:
    rules = [
        {
            "error_class": "transient",
            "exceptions": ["RuntimeError"],
            "message": "quota",
            "http_status": [],
        }
    ]
    messages = _run_child(
        tmp_path,
        [
            {"id": 1},
            {"id": 2, "fail": "value", "email": "x"},
            {"id": 3, "fail": "quota"},
            {"id": 4},
        ],
        rules,
    )
    # the handler's ctx calls go to the worker, in order: setup's before the child says it
    # is ready, then the item's; its metrics come with the reply
    assert messages[:6] == [
        {"acquire": "warm-up", "tokens": 1.0, "timeout": None},
        {"should_stop": True},
        {"ready": True},
        {"acquire": "api", "tokens": 1.0, "timeout": None},
        {"throttled": "api"},
        {"should_stop": True},
    ]
    replies = [m for m in messages if "ok" in m or "error_class" in m]
    task = "job-1/t000007/b000007#2@slot-a"  # the ctx the worker sent
    assert replies[0] == {
        "ok": {"id": 1, "n": 1, "task": task, "stop": False},
        "metrics": {"calls": 1.0},
        "api": {},  # no @ctx.limited calls
    }
    assert replies[1]["error_class"] == "permanent"
    assert replies[1]["exc_type"] == "ValueError"
    assert replies[1]["message"] == "bad email x"
    assert "ValueError: bad email x" in replies[1]["tb"]
    assert (replies[2]["error_class"], replies[2]["exc_type"]) == ("transient", "RuntimeError")
    assert replies[1]["metrics"] == {}  # it failed before counting a call
    assert replies[3]["ok"]["id"] == 4
    assert replies[3]["metrics"] == {"calls": 1.0}  # per item, not summed
    assert len(replies) == 4
    # set up once the worker says which job and slot; with their ids, and no task
    assert (tmp_path / "events.txt").read_text() == (
        "setup job-1@slot-a# False,teardown job-1@slot-a#"
    )
    # the worker's stop signals are left to the worker while an item is in flight
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


@pytest.mark.usefixtures("restored_process_state")
def test_an_acquire_the_worker_refuses_raises_in_the_child_and_fails_only_that_item(
    tmp_path: Path,
) -> None:
    refused = {"raise": "TimeoutError", "message": "rate limit 'api': no tokens within 2s"}
    messages = _run_child(tmp_path, [{"id": 1}, {"id": 2}], [], answer=refused)
    replies = [m for m in messages if "ok" in m or "error_class" in m]
    assert [(r["exc_type"], r["error_class"]) for r in replies] == [
        ("TimeoutError", "transient")
    ] * 2
    assert replies[0]["message"] == "rate limit 'api': no tokens within 2s"
    # the handler's report_throttled after the acquire never ran
    assert not any("throttled" in m for m in messages)
