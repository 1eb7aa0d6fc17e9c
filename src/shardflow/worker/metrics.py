"""Per-attempt metrics: wall and CPU time, peak memory, throughput, bytes, errors.

Collected with two ``getrusage`` calls and a few counters per attempt, so the cost is
independent of the item count. The committed attempt's metrics are stored on its task
row (``Task.metrics``) and summed into the job's counters as ``metrics.<name>``.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

_PEAK: list[float] = [0.0, 0.0]  # (read at, KiB): /proc is read at most once a second


def peak_rss_kb() -> int:
    """This process's peak resident memory in KiB (as of at most a second ago).

    Linux's ``ru_maxrss`` survives ``execve``: a process spawned from a large parent
    reports the parent's size at fork time. ``VmHWM`` belongs to the process's own
    address space, so it is read first; other systems fall back to ``ru_maxrss``.
    """
    now = time.monotonic()
    if now - _PEAK[0] < 1.0:
        return int(_PEAK[1])
    _PEAK[0], _PEAK[1] = now, float(_read_peak_rss_kb())
    return int(_PEAK[1])


def _read_peak_rss_kb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class AttemptMetrics:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self._cpu0 = usage.ru_utime + usage.ru_stime
        self.bytes_read = 0
        self.bytes_written = 0

    def finish(
        self,
        *,
        items: int,
        failures: Iterable[Mapping[str, Any]],
        handler_metrics: Mapping[str, float],
        limiter_metrics: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out: dict[str, float] = {
            "wall_ms": round(wall * 1000, 3),
            "cpu_ms": round((usage.ru_utime + usage.ru_stime - self._cpu0) * 1000, 3),
            "peak_rss_kb": float(peak_rss_kb()),
            "items": float(items),
            "items_per_s": round(items / wall, 1) if wall > 0 else 0.0,
            "bytes_read": float(self.bytes_read),
            "bytes_written": float(self.bytes_written),
        }
        errors = Counter(str(f.get("error_class")) for f in failures if f.get("kind") == "failed")
        for cls, n in errors.items():
            out[f"errors.{cls}"] = float(n)
        for name, value in (limiter_metrics or {}).items():
            out[name] = float(value)
        for name, value in handler_metrics.items():
            out[f"user.{name}"] = float(value)
        return out


def metric_counters(metrics: Mapping[str, float]) -> dict[str, int]:
    """Job-level sums of an attempt's additive metrics (rates and peaks are not summed)."""
    skip = {"items_per_s", "peak_rss_kb"}
    return {f"metrics.{k}": round(v) for k, v in metrics.items() if k not in skip and round(v)}
