"""The alert rules as pure functions, the alert text, and alerts.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shardflow.alerts.config import AlertsConfig, Rules, load_alerts_config
from shardflow.alerts.rules import (
    Condition,
    HostFacts,
    JobFacts,
    Snapshot,
    evaluate_host,
    evaluate_job,
)
from shardflow.alerts.text import RESOLVE, TRIGGER, Notice, body, subject_line
from shardflow.errors import ConfigError
from shardflow.models import Job, JobStatus

NOW = 1_800_000_000.0
MIN = 60.0


def job(status: JobStatus = JobStatus.RUNNING, **kw: Any) -> Job:
    config = {"config": {"retry": {"tolerated_failure_percent": 5.0}}}
    return Job("j1", "nightly", status=status, total_items=10_000, config=config, **kw)


def facts(counters: Mapping[str, int], j: Job | None = None, **kw: Any) -> JobFacts:
    return JobFacts(j or job(), counters, NOW, **kw)


def snap(at: float, counters: Mapping[str, int]) -> Snapshot:
    return Snapshot.of(at, counters)


def rules_of(conditions: list[Condition]) -> list[str]:
    return [c.rule for c in conditions]


def test_stalled_needs_no_progress_for_the_configured_time() -> None:
    c = {"items.succeeded": 500, "tasks.LEASED": 3}
    rules = Rules.model_validate({"stalled": {"after": "15m"}})
    history = [snap(NOW - 20 * MIN, {"items.succeeded": 400}), snap(NOW - 14 * MIN, c)]
    assert rules_of(evaluate_job(facts(c), history, rules)) == []
    history = [snap(NOW - 16 * MIN, c), snap(NOW - 5 * MIN, c)]
    (stalled,) = evaluate_job(facts(c), history, rules)
    assert stalled.rule == "stalled"
    assert stalled.since == NOW - 16 * MIN
    assert "no progress for 16 min" in stalled.what
    assert "3 task(s) leased" in stalled.what
    assert "shardflow recover j1" in stalled.action
    # a paused job is expected to stand still; a finished one is not watched
    assert evaluate_job(facts(c, job(paused=True)), history, rules) == []
    assert evaluate_job(facts(c, job(JobStatus.SUCCEEDED)), history, rules) == []


def test_error_rate_compares_the_window_not_the_whole_job() -> None:
    rules = Rules.model_validate({"error_rate": {"above_percent": 10, "window": "10m"}})
    old = snap(NOW - 9 * MIN, {"items.succeeded": 1000, "items.failed": 0})
    bad = {"items.succeeded": 1150, "items.failed": 50}  # 50 of the last 200: 25%
    (cond,) = evaluate_job(facts(bad), [old], rules)
    assert cond.rule == "error_rate"
    assert "25.0% of items failed in the last 9 min (50 of 200" in cond.what
    # the same counters with the failures long ago: the recent rate is fine
    calm = [snap(NOW - 30 * MIN, {"items.failed": 50}), snap(NOW - 9 * MIN, bad)]
    later = {"items.succeeded": 1400, "items.failed": 50}
    assert rules_of(evaluate_job(facts(later), calm, rules)) == []
    # too few items in the window to judge
    few = {"items.succeeded": 1010, "items.failed": 10}
    assert rules_of(evaluate_job(facts(few), [old], rules)) == []


def test_failures_near_the_tolerated_limit() -> None:
    rules = Rules()  # at 80% of tolerated_failure_percent (5%) = 4% of 10,000 items
    assert rules_of(evaluate_job(facts({"items.failed": 399}), [], rules)) == []
    (cond,) = evaluate_job(facts({"items.failed": 420}), [], rules)
    assert cond.rule == "failures_near_limit"
    assert "4.20% of items failed; the job fails above 5% (420 of 10,000 items)" in cond.what


def test_rate_limit_saturation_from_buckets_and_from_wait_time() -> None:
    rules = Rules()
    full = {"name": "geo", "burst": 100.0, "tokens": 2.0, "waiting_workers": 4, "paused": False}
    (cond,) = evaluate_job(facts({}, limits=[full]), [], rules)
    assert cond.rule == "rate_limit_saturated"
    assert "geo (4 worker(s) waiting)" in cond.what
    assert evaluate_job(facts({}, limits=[{**full, "paused": True}]), [], rules) == []
    assert evaluate_job(facts({}, limits=[{**full, "tokens": 50.0}]), [], rules) == []
    before = snap(NOW - 5 * MIN, {"metrics.wall_ms": 1000, "metrics.ratelimit_wait_ms": 0})
    now = {"metrics.wall_ms": 11_000, "metrics.ratelimit_wait_ms": 7_000}
    (cond,) = evaluate_job(facts(now), [before], rules)
    assert "70% of their time waiting" in cond.what


def test_infrastructure_errors_from_tasks_and_recent_items() -> None:
    rules = Rules()
    (cond,) = evaluate_job(facts({}, infra_tasks=2, infra_sample="S3 503 SlowDown"), [], rules)
    assert cond.rule == "infrastructure_errors"
    assert "2 task(s) retrying or failed" in cond.what
    assert "S3 503 SlowDown" in cond.what
    before = snap(NOW - MIN, {"metrics.errors.infrastructure": 5})
    (cond,) = evaluate_job(facts({"metrics.errors.infrastructure": 8}), [before], rules)
    assert "3 item(s) recently" in cond.what
    assert evaluate_job(facts({"metrics.errors.infrastructure": 5}), [before], rules) == []


def test_a_failed_job_is_reported_only_while_recent() -> None:
    failed = job(JobStatus.FAILED, updated_at=NOW - 3600, message="too many failures")
    (cond,) = evaluate_job(facts({}, failed), [], Rules())
    assert (cond.rule, cond.repeat, cond.since) == ("job_failed", False, NOW - 3600)
    old = job(JobStatus.FAILED, updated_at=NOW - 3 * 86400)
    assert evaluate_job(facts({}, old), [], Rules()) == []


def test_disabled_rules_never_fire() -> None:
    rules = Rules.model_validate({"failures_near_limit": {"enabled": False}})
    assert evaluate_job(facts({"items.failed": 5000}), [], rules) == []


def test_host_rules_compare_free_space_and_available_memory() -> None:
    rules = Rules.model_validate({"disk": {"min_free_percent": 5}})
    ok = HostFacts("n1", "/w", 1000, 60, 100, 50)
    assert evaluate_host(ok, rules) == []
    low = HostFacts("n1", "/w", 1000, 40, 100, 5)
    conds = evaluate_host(low, rules)
    assert [c.key for c in conds] == ["disk/host:n1", "memory/host:n1"]
    assert "4.0% free at /w" in conds[0].what
    assert evaluate_host(HostFacts("n1", "/w", 1000, 40, None, None), rules)[0].rule == "disk"


def test_alert_text_says_what_which_since_and_what_to_do() -> None:
    cond = Condition(
        "stalled", "j1", "critical", "no progress for 20 min", "run recover", job_name="nightly"
    )
    trigger = Notice(TRIGGER, cond, NOW - 20 * MIN, NOW, "login1", "http://127.0.0.1:8321/")
    assert subject_line(trigger) == "[shardflow] CRITICAL stalled: job nightly (j1)"
    assert body(trigger).splitlines() == [
        "What: no progress for 20 min",
        "Which: job nightly (j1)",
        "Since: 2027-01-15 07:40:00 UTC (20 min ago)",
        "What to do: run recover",
        "Dashboard: http://127.0.0.1:8321/jobs/j1",
        "Reported by: login1",
    ]
    resolve = Notice(RESOLVE, cond, NOW - 20 * MIN, NOW + 10 * MIN, "login1")
    assert subject_line(resolve) == "[shardflow] RESOLVED stalled: job nightly (j1)"
    assert "lasted 30 min" in body(resolve)


def test_config_defaults_and_problems_with_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = load_alerts_config(None)
    assert [c.type for c in default.channels] == ["log"]
    assert default.rules.stalled.after == 900.0
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "suppress: 30m\n"
        "rules:\n"
        "  stalled: {after: 20m}\n"
        "  error_rate: {above_percent: 500}\n"
        "channels:\n"
        "  - {type: slack, url_env: SLACK_URL, colour: red}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_alerts_config(path)
    problems = {p.field: p.line for p in err.value.problems}
    assert problems == {"rules.error_rate.above_percent": 4, "channels.0.colour": 6}
    path.write_text("channels:\n  - {type: slack, url_env: SLACK_URL}\n", encoding="utf-8")
    cfg = load_alerts_config(path)
    assert isinstance(cfg, AlertsConfig)
    from shardflow.alerts.channels import build_channels

    monkeypatch.delenv("SLACK_URL", raising=False)
    with pytest.raises(ConfigError, match="SLACK_URL is not set"):
        build_channels(cfg.channels)
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.example/T/B/x")
    assert [c.name for c in build_channels(cfg.channels)] == ["slack-1"]
