"""Progress display for `shardflow run`: a bar on a terminal, log lines otherwise.

On a terminal the bar owns the last line: a log line printed meanwhile first clears it,
then the bar is drawn again below the log line (:attr:`ProgressView.log_stream`).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from shardflow.coordinator.drive import Progress


class ProgressView:
    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self.last_line = 0.0
        self.drawn = False
        self._bar = ""
        self.log_stream = _AroundTheBar(self)

    def __call__(self, p: Progress) -> None:
        total = p.job.total_items or 0
        done = p.counters.get("items.succeeded", 0) + p.counters.get("items.failed", 0)
        failed = p.counters.get("items.failed", 0)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        tasks_done = sum(n for s, n in p.report.counts.items() if s.is_final)
        if self.tty:
            width = 30
            frac = done / total if total else 0.0
            bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
            line = (
                f"\r[{bar}] {frac:6.1%} {done}/{total} items  {rate:,.0f}/s  "
                f"ETA {eta:,.0f}s  failed {failed}  tasks {tasks_done}/{p.job.total_tasks}  "
                f"slots {p.slots} "
            )
            self._bar = line
            self.stream.write(line)
            self.stream.flush()
            self.drawn = True
        elif time.monotonic() - self.last_line >= self.interval:
            self.last_line = time.monotonic()
            self.stream.write(
                f"progress: {done}/{total} items, {rate:,.0f}/s, {failed} failed, "
                f"tasks {tasks_done}/{p.job.total_tasks}, slots {p.slots}\n"
            )
            self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
        self.drawn = False
        self._bar = ""

    def write_above(self, text: str) -> None:
        """Write ``text`` (whole lines) above the bar: clear it, write, draw it again."""
        if self.tty and self._bar:
            self.stream.write("\r\033[K")
            self.stream.write(text)
            self.stream.write(self._bar)
        else:
            self.stream.write(text)
        self.stream.flush()


class _AroundTheBar:
    """A text stream for log records that keeps the progress bar on the last line."""

    def __init__(self, view: ProgressView) -> None:
        self._view = view

    def write(self, text: str) -> int:
        self._view.write_above(text)
        return len(text)

    def flush(self) -> None:
        self._view.stream.flush()

    def isatty(self) -> bool:
        return self._view.tty
