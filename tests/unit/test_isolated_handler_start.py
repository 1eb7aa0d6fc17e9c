"""Starting and feeding the isolated handler's process (``worker.isolation: true``): a slow
setup is not an item's timeout, a failing setup says why, and an output JSON cannot carry
fails only its item."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shardflow.models import ErrorClass
from shardflow.worker.context import TaskContext
from shardflow.worker.isolation import HandlerCrashed, IsolatedHandler, RemoteItemError

HANDLER = """
    import os, time

    class Model:
        def setup(self, ctx):
            if os.environ.get("SETUP_FAILS"):
                raise RuntimeError("model file missing: /models/x.bin")
            time.sleep(float(os.environ.get("SETUP_SECONDS", "0")))

        def process(self, record, ctx):
            if record.get("set"):
                return {"id": record["id"], "tags": {"a", "b"}}  # a set: not JSON
            return {"id": record["id"]}
"""


Start = Callable[..., IsolatedHandler]


def ctx() -> TaskContext:
    return TaskContext("j", "t000001", "b000001", 1, "s", logging.getLogger("shardflow.handler"))


@pytest.fixture
def start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    (tmp_path / "model_iso.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
    made: list[IsolatedHandler] = []

    def make(timeout: float | None, **env: str) -> IsolatedHandler:
        for name, value in env.items():
            monkeypatch.setenv(name, value)  # the spawned child inherits it
        handler = IsolatedHandler("model_iso.py:Model", tmp_path, (), timeout)
        made.append(handler)
        return handler

    yield make
    for handler in made:
        handler.close()


def test_a_setup_slower_than_the_item_timeout_does_not_time_the_first_item_out(
    start: Start,
) -> None:
    handler = start(1.0, SETUP_SECONDS="1.5")
    assert handler.process({"id": 1}, ctx()) == {"id": 1}


def test_a_setup_that_fails_says_why(start: Start) -> None:
    handler = start(None, SETUP_FAILS="1")
    # the slot runs setup when it starts, as without isolation
    assert handler.setup is not None
    with pytest.raises(HandlerCrashed, match=r"RuntimeError: model file missing: /models/x\.bin"):
        handler.setup(ctx())
    assert handler._proc is None  # the child that failed is gone
    # a child started again later (after a crash) sets up again: the item says why
    with pytest.raises(HandlerCrashed, match=r"model file missing"):
        handler.process({"id": 1}, ctx())


def test_an_output_json_cannot_carry_fails_only_its_item(start: Start) -> None:
    handler = start(None)
    with pytest.raises(RemoteItemError) as info:
        handler.process({"id": 1, "set": True}, ctx())
    assert info.value.exc_type == "TypeError"
    assert info.value.error_class is ErrorClass.PERMANENT
    pid = handler._proc.pid
    assert handler.process({"id": 2}, ctx()) == {"id": 2}  # the same child goes on
    assert handler._proc.pid == pid
