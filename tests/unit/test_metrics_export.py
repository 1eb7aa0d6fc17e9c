"""Prometheus text exposition of job state: what a scraper or node exporter reads."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shardflow.models import Job, JobStatus, Task, TaskStatus
from shardflow.observability.metrics import render_prometheus, write_textfile
from shardflow.ratelimit.control import ensure_buckets
from shardflow.statestore.memory import MemoryStateStore


def parse(text: str) -> dict[str, list[Any]]:
    """Family name → its samples; the parser raises on any malformed line."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def values(samples: list[Any], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if s.name == name}


@pytest.fixture
def state() -> MemoryStateStore:
    store = MemoryStateStore()
    store.create_job(
        Job(
            "enrich",
            'enrich "users"\\ nightly\n',
            status=JobStatus.RUNNING,
            created_at=100.0,
            updated_at=160.5,
            total_tasks=3,
            total_items=300,
            config={
                "config": {
                    "backends": {"executor": "slurm"},
                    "rate_limits": {"geo_api": {"rate": 50.0, "burst": 100.0}},
                },
                "split": {"rejected": 2},
            },
        )
    )
    store.register_tasks(
        [
            Task("enrich", "t000000", "b000000", status=TaskStatus.SUCCEEDED),
            Task("enrich", "t000001", "b000001", status=TaskStatus.LEASED),
            Task("enrich", "t000002", "b000002"),
        ]
    )
    store.add_counters(
        "enrich",
        {
            "items.succeeded": 97,
            "items.failed": 3,
            "rows": 97,
            "attempts": 4,
            "metrics.wall_ms": 12_500,
            "metrics.cpu_ms": 4_000,
            "metrics.bytes_read": 2048,
            "metrics.api_calls": 100,
            "metrics.api_ms": 1500,
            "metrics.ratelimit_wait_ms": 250,
            "metrics.tokens": 100,
            "metrics.errors.transient": 2,
            "metrics.errors.permanent": 1,
            "metrics.user.geocoded": 95,
            "metrics.custom_thing": 7,
        },
    )
    ensure_buckets(state=store, job_id="enrich", limits={"geo_api": (50.0, 100.0)}, now=150.0)
    store.create_job(Job("old", "old", status=JobStatus.SUCCEEDED, created_at=50.0))
    return store


def test_job_counters_become_labelled_series(state: MemoryStateStore) -> None:
    families = parse(render_prometheus(state))
    info = families["shardflow_job_info"]
    assert {s.labels["job_id"] for s in info} == {"enrich", "old"}
    enrich = next(s for s in info if s.labels["job_id"] == "enrich")
    assert enrich.labels["name"] == 'enrich "users"\\ nightly\n'  # escaped, round-trips
    assert enrich.labels["executor"] == "slurm"
    status = {
        (s.labels["job_id"], s.labels["status"]): s.value for s in families["shardflow_job_status"]
    }
    assert status[("enrich", "RUNNING")] == 1
    assert status[("enrich", "SUCCEEDED")] == 0
    assert status[("old", "SUCCEEDED")] == 1
    tasks = [s for s in families["shardflow_job_tasks"] if s.labels["job_id"] == "enrich"]
    assert {s.labels["state"]: s.value for s in tasks} == {
        "PENDING": 1,
        "LEASED": 1,
        "RETRY_WAIT": 0,
        "SUCCEEDED": 1,
        "FAILED": 0,
        "CANCELLED": 0,
    }
    items = [s for s in families["shardflow_job_items"] if s.labels["job_id"] == "enrich"]
    assert values(items, "shardflow_job_items_total", "outcome") == {
        "succeeded": 97,
        "failed": 3,
        "rejected": 2,
    }


def test_attempt_metrics_are_exported_in_base_units(state: MemoryStateStore) -> None:
    families = parse(render_prometheus(state, job_ids=["enrich"]))

    def one(name: str) -> float:
        (sample,) = [s for s in families[name] if s.name.endswith("_total")]
        return float(sample.value)

    assert one("shardflow_job_wall_seconds") == pytest.approx(12.5)
    assert one("shardflow_job_cpu_seconds") == pytest.approx(4.0)
    assert one("shardflow_job_api_seconds") == pytest.approx(1.5)
    assert one("shardflow_job_ratelimit_wait_seconds") == pytest.approx(0.25)
    assert one("shardflow_job_bytes_read") == 2048
    assert one("shardflow_job_api_calls") == 100
    assert one("shardflow_job_ratelimit_tokens") == 100
    errors = families["shardflow_job_item_errors"]
    assert values(errors, "shardflow_job_item_errors_total", "class") == {
        "transient": 2,
        "permanent": 1,
    }
    user = families["shardflow_job_user_metric"]
    assert values(user, "shardflow_job_user_metric_total", "metric") == {"geocoded": 95}
    other = families["shardflow_job_metric"]
    assert values(other, "shardflow_job_metric_total", "metric") == {"custom_thing": 7}
    limits = families["shardflow_ratelimit_rate"]
    assert [(s.labels["limit"], s.value) for s in limits] == [("geo_api", 50.0)]
    assert families["shardflow_ratelimit_burst"][0].value == 100.0
    assert families["shardflow_exporter_jobs"][0].value == 1


def test_unknown_job_ids_are_skipped(state: MemoryStateStore) -> None:
    families = parse(render_prometheus(state, job_ids=["nope"]))
    assert families["shardflow_exporter_jobs"][0].value == 0
    assert "shardflow_job_info" not in families


def test_textfile_is_replaced_atomically_and_readable_by_the_exporter(
    state: MemoryStateStore, tmp_path: Path
) -> None:
    path = tmp_path / "collector" / "shardflow.prom"
    size = write_textfile(path, state)
    assert path.stat().st_size == size
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "shardflow_job_info" in parse(path.read_text())
    state.add_counters("enrich", {"items.succeeded": 3})
    write_textfile(path, state, job_ids=["enrich"])
    items = parse(path.read_text())["shardflow_job_items"]
    assert values(items, "shardflow_job_items_total", "outcome")["succeeded"] == 100
    assert [p.name for p in path.parent.iterdir()] == ["shardflow.prom"]  # no temp left
