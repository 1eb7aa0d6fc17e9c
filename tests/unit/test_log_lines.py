"""Worker and CLI log records: readable coloured lines on a terminal, JSON lines
elsewhere, both carrying the task and attempt a record was logged under."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from shardflow.observability.logging import configure_logging, reset_log_fields, set_log_fields


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_on_a_terminal_records_are_coloured_lines_with_task_and_attempt(
    root_logger: logging.Logger,
) -> None:
    stream = _Terminal()
    configure_logging("INFO", stream)
    token = set_log_fields(job_id="job-1", task_id="t000007", attempt=2, slot=None)
    try:
        logging.getLogger("shardflow.test").warning("slow item %s", "b1:4")
    finally:
        reset_log_fields(token)
    logging.getLogger("shardflow.test").info("no task here")

    first, second = stream.getvalue().splitlines()
    assert first.startswith("\x1b[33m")
    assert first.endswith("\x1b[0m")
    assert "WARNING [t000007#2] slow item b1:4" in first
    assert second.startswith("\x1b[36m")
    assert "INFO    no task here" in second
    assert "#" not in second  # no task, no [task#attempt]


def test_a_terminal_line_carries_the_traceback_of_an_exception(
    root_logger: logging.Logger,
) -> None:
    stream = _Terminal()
    configure_logging("INFO", stream, json=False)
    try:
        raise KeyError("missing id")
    except KeyError:
        logging.getLogger("shardflow.test").exception("item failed")
    text = stream.getvalue()
    assert "ERROR   item failed" in text
    assert "Traceback (most recent call last)" in text
    assert "KeyError: 'missing id'" in text


def test_human_lines_without_colour_when_asked_for_text_off_a_terminal(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream, json=False)
    logging.getLogger("shardflow.test").error("plain")
    line = stream.getvalue().strip()
    assert "\x1b[" not in line
    assert line.endswith("ERROR   plain")


def test_off_a_terminal_records_are_json_with_the_context_fields(
    root_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    token = set_log_fields(job_id="job-1", task_id="t000001", attempt=1, slot="local-0")
    try:
        logging.getLogger("shardflow.test").debug("leased")
    finally:
        reset_log_fields(token)
    record = orjson.loads(stream.getvalue().splitlines()[-1])
    assert record["msg"] == "leased"
    assert record["level"] == "DEBUG"
    assert (record["job_id"], record["task_id"], record["attempt"], record["slot"]) == (
        "job-1",
        "t000001",
        1,
        "local-0",
    )


def test_configuring_twice_keeps_one_handler(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("INFO", io.StringIO())
    configure_logging("INFO", stream)
    logging.getLogger("shardflow.test").info("once")
    assert len(stream.getvalue().splitlines()) == 1
    # botocore's debug logs (request signatures) stay off whatever the level
    configure_logging("DEBUG", stream)
    assert logging.getLogger("botocore").level == logging.INFO
