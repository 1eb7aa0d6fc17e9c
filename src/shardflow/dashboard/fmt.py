"""Human formats for numbers, sizes, durations and times (also the templates' filters)."""

from __future__ import annotations

import time


def duration(seconds: float | None) -> str:
    """``0.42`` → ``420ms``, ``75`` → ``1m 15s``, ``93784`` → ``1d 2h``; None → ``-``."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def count(value: float | None) -> str:
    """``1234567`` → ``1.2M``, ``12345`` → ``12.3k``, ``999`` → ``999``."""
    if value is None:
        return "-"
    n = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}"
    return f"{n:.0f}" if n == int(n) else f"{n:.1f}"


def grouped(value: float | None) -> str:
    """``1234567`` → ``1,234,567`` (exact, for tables)."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def size(value: float | None) -> str:
    """Bytes in binary units: ``1536`` → ``1.5 KiB``."""
    if value is None:
        return "-"
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def timestamp(epoch: float | None) -> str:
    """Local time ``YYYY-MM-DD HH:MM:SS`` (the dashboard runs beside its operator)."""
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def iso(epoch: float | None) -> str:
    """UTC ISO 8601, for ``<time datetime>`` and tooltips."""
    if not epoch:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
