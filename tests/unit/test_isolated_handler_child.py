"""The isolated handler's child side (``worker.isolation: true``), driven in-process over a
socket pair: one reply per record, exceptions classed there with the job's rules, setup
before the first item and teardown when the worker closes the pipe.

The real child is killed when the worker closes it, so its own coverage is never saved;
this drives the same loop in the test process."""

from __future__ import annotations

import logging
import signal
import socket
import textwrap
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import pytest

from shardflow.worker.isolation import _child

HANDLER = """
    EVENTS = []

    class Enrich:
        def setup(self, ctx):
            EVENTS.append("setup")

        def process(self, record, ctx):
            if record.get("fail") == "value":
                raise ValueError("bad email " + record["email"])
            if record.get("fail") == "quota":
                raise RuntimeError("quota exceeded")
            ctx.metric("calls", 1)
            ctx.acquire("api")
            ctx.report_throttled("api")
            ctx.logger.info("enriched %s", record["id"])
            return {"id": record["id"], "n": len(EVENTS)}

        def teardown(self, ctx):
            EVENTS.append("teardown")
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
    tmp_path: Path, records: list[dict[str, Any]], rules: list[dict[str, Any]]
) -> list[Any]:
    (tmp_path / "enrich_iso.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    a, b = socket.socketpair()
    worker, child = Connection(a.detach()), Connection(b.detach())
    for record in records:
        worker.send_bytes(orjson.dumps(record))
    # the worker is done: the child sees EOF once it has read every record
    with socket.fromfd(worker.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as view:
        view.shutdown(socket.SHUT_WR)
    _child(child, "enrich_iso.py:Enrich", str(tmp_path), rules)
    child.close()
    replies = []
    while worker.poll(0):
        try:
            replies.append(orjson.loads(worker.recv_bytes()))
        except EOFError:
            break
    worker.close()
    return replies


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
    replies = _run_child(
        tmp_path,
        [
            {"id": 1},
            {"id": 2, "fail": "value", "email": "x"},
            {"id": 3, "fail": "quota"},
            {"id": 4},
        ],
        rules,
    )
    assert replies[0] == {"ok": {"id": 1, "n": 1}}
    assert replies[1]["error_class"] == "permanent"
    assert replies[1]["exc_type"] == "ValueError"
    assert replies[1]["message"] == "bad email x"
    assert "ValueError: bad email x" in replies[1]["tb"]
    assert (replies[2]["error_class"], replies[2]["exc_type"]) == ("transient", "RuntimeError")
    assert replies[3] == {"ok": {"id": 4, "n": 1}}
    assert len(replies) == 4
    assert (tmp_path / "events.txt").read_text() == "setup,teardown"
    # the worker's stop signals are left to the worker while an item is in flight
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
