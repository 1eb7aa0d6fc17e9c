"""SVG geometry for the job page's two charts, computed on the server.

The templates draw these as inline SVG: no chart library, no script, nothing fetched.
Coordinates are numbers computed here; the only text is tick labels and titles, which
the templates escape like everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shardflow.dashboard import fmt

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28
POINTS = 160


@dataclass(frozen=True, slots=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart: a line (``points``) or ``bars`` inside the plot box, with ticks."""

    title: str
    width: int = WIDTH
    height: int = HEIGHT
    points: str = ""
    area: str = ""
    bars: tuple[Bar, ...] = ()
    x_ticks: tuple[Tick, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    markers: tuple[Tick, ...] = ()
    empty: bool = True

    @property
    def left(self) -> int:
        return LEFT

    @property
    def right(self) -> int:
        return self.width - RIGHT

    @property
    def top(self) -> int:
        return TOP

    @property
    def bottom(self) -> int:
        return self.height - BOTTOM


def _x(t: float, start: float, span: float) -> float:
    return round(LEFT + (WIDTH - LEFT - RIGHT) * (t - start) / span, 1)


def _y(v: float, top_value: float) -> float:
    plot = HEIGHT - TOP - BOTTOM
    return round(HEIGHT - BOTTOM - plot * (v / top_value), 1)


def _x_ticks(start: float, span: float) -> tuple[Tick, ...]:
    return tuple(
        Tick(_x(start + span * f, start, span), fmt.duration(span * f)) for f in (0, 0.5, 1)
    )


def _y_ticks(top_value: float, unit: str) -> tuple[Tick, ...]:
    return tuple(
        Tick(_y(top_value * f, top_value), fmt.count(top_value * f) + unit) for f in (0, 0.5, 1)
    )


def _bucket_sums(
    finished: Sequence[tuple[float, int]], start: float, span: float, buckets: int
) -> list[int]:
    width = span / buckets
    sums = [0] * buckets
    for at, items in finished:
        sums[min(buckets - 1, max(0, int((at - start) / width)))] += items
    return sums


def progress_chart(
    finished: Sequence[tuple[float, int]],
    *,
    start: float,
    end: float,
    total_items: int,
    events: Sequence[tuple[float, str]] = (),
) -> Chart:
    """Items done (cumulative) against time since ``start``; ``finished`` holds
    (finished_at, items) pairs sorted by time, ``events`` (at, kind) become markers."""
    title = "Items done over time"
    if not finished or end <= start:
        return Chart(title)
    span = max(end - start, 1e-3)
    done = sum(n for _t, n in finished)
    top_value = float(max(total_items, done, 1))
    # at most POINTS points whatever the task count: a 100,000-task job stays a small page
    sums = _bucket_sums(finished, start, span, POINTS)
    pts = [(float(LEFT), _y(0, top_value))]
    cumulative = 0
    for i, items in enumerate(sums):
        cumulative += items
        pts.append((_x(start + span * (i + 1) / POINTS, start, span), _y(cumulative, top_value)))
    line = " ".join(f"{x},{y}" for x, y in pts)
    base = _y(0, top_value)
    area = f"{LEFT},{base} {line} {pts[-1][0]},{base}"
    markers = tuple(Tick(_x(at, start, span), kind) for at, kind in events if start <= at <= end)
    return Chart(
        title,
        points=line,
        area=area,
        x_ticks=_x_ticks(start, span),
        y_ticks=_y_ticks(top_value, ""),
        markers=markers,
        empty=False,
    )


def throughput_chart(
    finished: Sequence[tuple[float, int]], *, start: float, end: float, buckets: int = 48
) -> Chart:
    """Items per second, in ``buckets`` equal slices of the job's time. Items count in
    the slice where their task finished (a task's items are committed together)."""
    title = "Throughput (items/s)"
    if not finished or end <= start:
        return Chart(title)
    span = max(end - start, 1e-3)
    width = span / buckets
    sums = _bucket_sums(finished, start, span, buckets)
    rates = [s / width for s in sums]
    top_value = max(max(rates), 1e-9)
    plot_w = (WIDTH - LEFT - RIGHT) / buckets
    bars = []
    for i, rate in enumerate(rates):
        if rate <= 0:
            continue
        y = _y(rate, top_value)
        bars.append(
            Bar(
                round(LEFT + i * plot_w + 0.5, 1),
                y,
                round(max(plot_w - 1, 0.5), 1),
                round(HEIGHT - BOTTOM - y, 1),
                f"{fmt.duration(i * width)}–{fmt.duration((i + 1) * width)}: "
                f"{fmt.count(rate)} items/s",
            )
        )
    return Chart(
        title,
        bars=tuple(bars),
        x_ticks=_x_ticks(start, span),
        y_ticks=_y_ticks(top_value, "/s"),
        empty=False,
    )
