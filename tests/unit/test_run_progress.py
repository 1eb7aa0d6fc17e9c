"""What `shardflow run` shows while a job runs: a redrawn bar on a terminal, a line every
``interval`` seconds in a log, and a final newline so the shell prompt starts clean."""

from __future__ import annotations

import io
import re
import types

import pytest

from shardflow.cli import progress
from shardflow.cli.progress import ProgressView
from shardflow.coordinator.drive import Progress
from shardflow.coordinator.reconcile import ReconcileReport
from shardflow.models import Job, TaskStatus


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress(succeeded: int, failed: int, total_items: int | None = 200) -> Progress:
    job = Job(job_id="job-1", name="p", total_items=total_items, total_tasks=4)
    counts = {TaskStatus.SUCCEEDED: 1, TaskStatus.FAILED: 1, TaskStatus.LEASED: 2}
    return Progress(
        job=job,
        counters={"items.succeeded": succeeded, "items.failed": failed},
        report=ReconcileReport(counts=counts),
        slots=2,
    )


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    stream = _Terminal()
    view = ProgressView(stream)
    view(_progress(90, 10))
    view(_progress(150, 10))
    view.close()
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) == 2
    assert re.match(r"\[#{15}-{15}\]  50\.0% 100/200 items", frames[0])
    assert re.match(r"\[#{24}-{6}\]  80\.0% 160/200 items", frames[1])
    assert "failed 10  tasks 2/4  slots 2" in frames[1]
    assert stream.getvalue().endswith(" \n")


def test_a_log_gets_one_line_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    stream = io.StringIO()
    view = ProgressView(stream, interval=5)
    now[0] += 10
    view(_progress(90, 10))
    now[0] += 4
    view(_progress(150, 10))  # within the interval: no line
    now[0] += 1
    view(_progress(190, 10))
    view.close()  # nothing was drawn, so no extra newline
    assert stream.getvalue().splitlines() == [
        "progress: 100/200 items, 10/s, 10 failed, tasks 2/4, slots 2",
        "progress: 200/200 items, 13/s, 10 failed, tasks 2/4, slots 2",
    ]


def test_a_job_whose_size_is_not_known_yet_shows_an_empty_bar() -> None:
    stream = _Terminal()
    view = ProgressView(stream)
    view(_progress(0, 0, total_items=None))
    assert stream.getvalue().startswith(f"\r[{'-' * 30}]   0.0% 0/0 items")


def test_a_log_line_on_a_terminal_clears_the_bar_and_the_bar_comes_back_below() -> None:
    import logging

    from shardflow.observability.logging import configure_logging

    stream = _Terminal()
    view = ProgressView(stream)
    configure_logging("INFO", view.log_stream)
    try:
        view(_progress(90, 10))
        logging.getLogger("shardflow.test").info("started 2 worker slots")
        view.close()
    finally:
        configure_logging("INFO")
    text = stream.getvalue()
    bar = text[: text.index("\x1b[K")]
    after = text[text.index("\x1b[K") + 3 :]
    # the bar, erased; the log line on a line of its own; the bar drawn again
    assert bar.startswith("\r[")
    assert bar.endswith("\r")
    log_line, redrawn = after.split("\n", 1)
    assert "INFO    started 2 worker slots" in log_line
    assert "items" not in log_line  # no piece of the bar is left on it
    assert redrawn.startswith("\r[")
    assert redrawn.endswith(" \n")


def test_a_log_line_without_a_bar_is_just_written() -> None:
    stream = io.StringIO()
    view = ProgressView(stream)
    view.log_stream.write("a line\n")
    assert stream.getvalue() == "a line\n"
    assert not view.log_stream.isatty()
