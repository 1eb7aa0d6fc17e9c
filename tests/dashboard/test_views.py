"""What the pages show, as data: logs wherever they are, failure samples, charts, limits."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.dashboard import charts, fmt
from shardflow.dashboard.tasks import log_location, parse_log, read_log_tail
from shardflow.dashboard.views import job_page, read_item_failures
from shardflow.layout import Layout
from shardflow.models import Job, JobStatus
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.ratelimit.control import ensure_buckets
from shardflow.statestore.memory import MemoryStateStore


def test_a_log_uploaded_beside_the_results_is_read_when_the_workspace_has_none(
    tmp_path: Path,
) -> None:
    job = Job("j1", "j", config={"workspace": str(tmp_path / "elsewhere")})
    store = MemoryObjectStore()
    lines = [f'{{"ts": {i}.0, "level": "INFO", "msg": "item {i}"}}' for i in range(5000)]
    store.put_bytes(Layout("j1").task_log("t000001", 2), "\n".join(lines).encode())
    assert log_location(job, "t000001", 2, lambda j: store) == "store"
    assert log_location(job, "t000001", 1, lambda j: store) is None
    tail = read_log_tail(job, "t000001", 2, lambda j: store, tail_bytes=4096)
    assert tail is not None
    data, cut = tail
    assert cut
    records = parse_log(data, cut)
    assert records[-1]["msg"] == "item 4999"
    assert all(r["level"] == "INFO" for r in records)  # the cut first line was dropped
    assert read_log_tail(job, "t000001", 3, lambda j: None) is None


def test_log_lines_that_are_not_json_are_kept_as_text() -> None:
    data = b'{"ts": 1.5, "level": "ERROR", "msg": "boom", "exc": "Traceback"}\nplain <b>line</b>\n'
    records = parse_log(data, cut=False)
    assert records[0] == {
        "ts": 1.5,
        "level": "ERROR",
        "logger": "",
        "msg": "boom",
        "exc": "Traceback",
    }
    assert records[1]["msg"] == "plain <b>line</b>"


def test_item_failures_are_grouped_by_class_and_exception_with_samples() -> None:
    store = MemoryObjectStore()
    assert read_item_failures(store, "j1") is None
    rows = [
        {
            "key": f"k{i}",
            "error_class": c,
            "exception": e,
            "message": f"m{i}",
            "task_id": "t000000",
            "line": i,
        }
        for i, (c, e) in enumerate(
            [("permanent", "ValueError")] * 5 + [("transient", "TimeoutError")] * 2
        )
    ]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    store.put_bytes(Layout("j1").output("failures", "parquet"), buf.getvalue())
    groups = read_item_failures(store, "j1")
    assert groups is not None
    assert [(g["class"], g["exception"], g["count"]) for g in groups] == [
        ("permanent", "ValueError", 5),
        ("transient", "TimeoutError", 2),
    ]
    assert [s["key"] for s in groups[0]["samples"]] == ["k0", "k1", "k2"]


def test_job_page_shows_rate_limit_use_and_slots() -> None:
    state = MemoryStateStore()
    job = Job(
        "j1",
        "limited",
        status=JobStatus.RUNNING,
        created_at=100.0,
        config={"config": {"rate_limits": {"geo": {"rate": 10.0, "burst": 20.0}}}},
    )
    state.create_job(job)
    ensure_buckets(state, "j1", {"geo": (10.0, 20.0)}, now=100.0)
    page = job_page(state, job, now=101.0, scan=None, item_failures=None)
    (limit,) = page["limits"]
    assert (limit["name"], limit["rate"], limit["burst"]) == ("geo", 10.0, 20.0)
    assert limit["used"] == pytest.approx(0.0)
    assert page["charts"] is None  # the scan is still running
    assert page["can_pause"]
    assert not page["can_retry"]


def test_charts_stay_small_whatever_the_task_count() -> None:
    finished = [(100.0 + i * 0.01, 10) for i in range(100_000)]
    chart = charts.progress_chart(finished, start=100.0, end=1100.0, total_items=1_000_000)
    assert len(chart.points.split()) == charts.POINTS + 1
    assert chart.y_ticks[-1].label == "1.0M"
    bars = charts.throughput_chart(finished, start=100.0, end=1100.0)
    assert len(bars.bars) <= 48
    assert charts.progress_chart([], start=0, end=1, total_items=1).empty


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.42, "420ms"), (7.25, "7.2s"), (75, "1m 15s"), (7200, "2h"), (93784, "1d 2h")],
)
def test_durations_read_like_a_person_writes_them(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text
