"""What a job tolerates before it fails: a percent of its items, a count, or both (then
exceeding either fails it); 1% when the job sets neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardflow.config import load_job_config
from shardflow.coordinator.retry import FailureThreshold
from shardflow.coordinator.specs import failure_threshold


@pytest.mark.parametrize(
    ("percent", "count", "failed", "total", "exceeded"),
    [
        (None, None, 100, 10_000, False),  # the default 1%: at the limit is tolerated
        (None, None, 101, 10_000, True),
        (None, 1000, 500, 10_000, False),  # a count alone replaces the default percent
        (None, 1000, 1001, 10_000, True),
        (5.0, 1000, 600, 10_000, True),  # both: 600 is above 5% of 10,000
        (5.0, 100, 101, 10_000, True),  # both: 101 is above the count
        (5.0, 1000, 500, 10_000, False),
        (0.0, None, 1, 10_000, True),  # nothing tolerated
        (0.0, None, 0, 10_000, False),
        (None, 0, 1, 10_000, True),
        (None, None, 1, 0, True),  # failures of a job with no items
        (2.3, None, 69, 3000, False),  # exactly at 2.3%: 2.3 * 3000 is 6899.99… in floats
        (2.3, None, 70, 3000, True),
    ],
)
def test_a_job_fails_above_its_tolerance(
    percent: float | None, count: int | None, failed: int, total: int, exceeded: bool
) -> None:
    assert FailureThreshold.of(percent, count).exceeded(failed, total) is exceeded


def test_the_tolerance_is_described_as_configured() -> None:
    assert FailureThreshold.of(None, None).describe() == "1%"
    assert FailureThreshold.of(None, 1000).describe() == "1,000 items"
    assert FailureThreshold.of(2.5, 1).describe() == "2.5% or 1 item"
    assert FailureThreshold.of(None, 1000).used(800, 10_000) == pytest.approx(0.8)
    assert FailureThreshold(percent=None, count=None) == FailureThreshold.of(None, None)


def test_a_job_file_with_only_a_count_is_held_to_the_count(tmp_path: Path) -> None:
    (tmp_path / "h.py").write_text("def h(r, ctx):\n    return r\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: t\nhandler: h.py:h\ninput: {path: in.jsonl}\n"
        "retry: {tolerated_failure_count: 1000}\n",
        encoding="utf-8",
    )
    threshold = failure_threshold(load_job_config(job, env={}, cwd=tmp_path).config)
    assert threshold == FailureThreshold(percent=None, count=1000)
    assert not threshold.exceeded(500, 10_000)
