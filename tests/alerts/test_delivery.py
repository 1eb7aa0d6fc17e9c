"""Alerts delivered to a local SMTP server and local HTTP receivers, with suppression,
repeat, resolve, one-shot alerts and retried deliveries."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from shardflow.alerts.channels import build_channels
from shardflow.alerts.config import AlertsConfig
from shardflow.alerts.rules import HostFacts
from shardflow.alerts.runner import PassReport, run_pass
from shardflow.alerts.state import load_state
from shardflow.models import Job, JobStatus, Phase, Task, TaskStatus
from shardflow.statestore.memory import MemoryStateStore
from tests.alerts.conftest import HttpReceiver, Mailbox

JOB = "enrich-0425"
T0 = 1_800_000_000.0
MIN = 60.0


def healthy(workspace: Path) -> HostFacts:
    return HostFacts("node1", str(workspace), 100 << 30, 50 << 30, 64 << 30, 32 << 30)


@pytest.fixture
def state() -> MemoryStateStore:
    store = MemoryStateStore()
    store.create_job(
        Job(
            JOB,
            "enrich-users",
            status=JobStatus.RUNNING,
            phase=Phase.MAP,
            created_at=T0 - 600,
            updated_at=T0,
            total_tasks=10,
            total_items=1000,
            config={"config": {"retry": {"tolerated_failure_percent": 50.0}}},
        )
    )
    store.register_tasks(
        [Task(JOB, f"t{i:06d}", f"b{i:06d}", status=TaskStatus.PENDING) for i in range(10)]
    )
    store.add_counters(JOB, {"items.succeeded": 300})
    return store


def make_config(
    smtp: Mailbox, http: HttpReceiver, monkeypatch: pytest.MonkeyPatch, **extra: object
) -> AlertsConfig:
    monkeypatch.setenv("PD_ROUTING_KEY", "R0UT1NGKEY0000000000000000000000")
    monkeypatch.setenv("HOOK_TOKEN", "Bearer s3cret")
    return AlertsConfig.model_validate(
        {
            "suppress": "1h",
            "source": "watcher-1",
            "dashboard_url": "http://127.0.0.1:8321",
            "rules": {"stalled": {"after": "10m"}},
            "channels": [
                {
                    "type": "email",
                    "host": smtp.host,
                    "port": smtp.port,
                    "from": "shardflow@example.org",
                    "to": ["oncall@example.org"],
                },
                {"type": "slack", "url": f"{http.base}/slack"},
                {
                    "type": "pagerduty",
                    "routing_key_env": "PD_ROUTING_KEY",
                    "url": f"{http.base}/pagerduty",
                },
                {
                    "type": "webhook",
                    "url": f"{http.base}/hook",
                    "headers_env": {"Authorization": "HOOK_TOKEN"},
                },
            ],
            **extra,
        }
    )


Pass = Callable[[float], PassReport]


@pytest.fixture
def one_pass(
    state: MemoryStateStore,
    smtp_server: Mailbox,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Pass:
    return passes(state, make_config(smtp_server, http_receiver, monkeypatch), tmp_path)


def passes(state: MemoryStateStore, cfg: AlertsConfig, tmp_path: Path) -> Pass:
    """One alert pass at a given time over ``cfg``'s channels, on a healthy host."""
    channels = build_channels(cfg.channels)

    def run(now: float) -> PassReport:
        return run_pass(
            state,
            cfg,
            channels,
            tmp_path / "alerts.json",
            now=now,
            workspace=tmp_path,
            probe=healthy,
        )

    return run


def test_stalled_job_alerts_every_channel_then_suppresses_repeats_and_resolves(
    one_pass: Pass,
    state: MemoryStateStore,
    smtp_server: Mailbox,
    http_receiver: HttpReceiver,
    tmp_path: Path,
) -> None:
    assert one_pass(T0).conditions == []  # a first look: nothing to compare with yet
    assert one_pass(T0 + 5 * MIN).conditions == []
    report = one_pass(T0 + 11 * MIN)
    assert [c.rule for c in report.conditions] == ["stalled"]
    assert len(report.sent) == 4
    assert report.failures == []

    # email: what, which job, since when, what to do
    (mail,) = smtp_server.messages
    assert mail["Subject"] == "[shardflow] CRITICAL stalled: job enrich-users (enrich-0425)"
    assert smtp_server.envelopes == [("shardflow@example.org", ["oncall@example.org"])]
    text = mail.get_content()
    assert "What: no progress for 11 min: 300 of 1,000 items done" in text
    assert "Which: job enrich-users (enrich-0425)" in text
    assert "Since: 2027-01-15 08:00:00 UTC (11 min ago)" in text
    assert "What to do: check the slots and running tasks" in text
    assert "Dashboard: http://127.0.0.1:8321/jobs/enrich-0425" in text
    # Slack and PagerDuty accepted their payloads (the receivers check the shapes)
    (slack,) = http_receiver.at("/slack")
    assert slack["blocks"][0]["text"]["text"].startswith("[shardflow] CRITICAL stalled")
    (trigger,) = http_receiver.at("/pagerduty")
    assert trigger["event_action"] == "trigger"
    assert trigger["dedup_key"] == "shardflow/stalled/enrich-0425"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "watcher-1"
    assert trigger["payload"]["custom_details"]["what_to_do"].startswith("check the slots")
    (hook,) = [r for r in http_receiver.requests if r.path == "/hook"]
    assert hook.headers["Authorization"] == "Bearer s3cret"
    assert hook.body["event"] == "trigger"
    assert hook.body["since"] == T0

    # still stalled within the suppression window: nothing new goes out
    quiet = one_pass(T0 + 30 * MIN)
    assert quiet.sent == []
    assert quiet.suppressed == 4
    # past the window: one reminder per channel
    reminder = one_pass(T0 + 72 * MIN)
    assert len(reminder.sent) == 4
    assert len(http_receiver.at("/pagerduty")) == 2

    # progress again: every channel hears it resolved, PagerDuty by the same dedup key
    state.add_counters(JOB, {"items.succeeded": 100})
    resolved = one_pass(T0 + 80 * MIN)
    assert resolved.conditions == []
    assert resolved.resolved == ["stalled/enrich-0425"]
    resolve = http_receiver.at("/pagerduty")[-1]
    assert resolve == {
        "routing_key": "R0UT1NGKEY0000000000000000000000",
        "event_action": "resolve",
        "dedup_key": "shardflow/stalled/enrich-0425",
    }
    assert smtp_server.messages[-1]["Subject"].startswith("[shardflow] RESOLVED stalled")
    assert "lasted 80 min" in smtp_server.messages[-1].get_content()
    assert http_receiver.at("/hook")[-1]["event"] == "resolve"
    assert load_state(tmp_path / "alerts.json").open == {}
    assert one_pass(T0 + 81 * MIN).sent == []  # resolved once, not again


def test_a_failed_delivery_is_retried_at_the_next_pass_and_only_there(
    one_pass: Pass, http_receiver: HttpReceiver, smtp_server: Mailbox
) -> None:
    one_pass(T0)
    http_receiver.fail_next["/slack"] = 1
    first = one_pass(T0 + 11 * MIN)
    assert len(first.failures) == 1
    assert first.failures[0].startswith("slack-2: trigger stalled/enrich-0425: HTTP 500")
    assert "127.0.0.1" not in first.failures[0]  # the secret URL is never repeated
    second = one_pass(T0 + 12 * MIN)
    assert second.sent == [("trigger", "stalled/enrich-0425", "slack-2")]
    assert second.suppressed == 3
    assert len(smtp_server.messages) == 1


def test_a_failed_job_is_announced_once(
    one_pass: Pass, state: MemoryStateStore, http_receiver: HttpReceiver
) -> None:
    one_pass(T0)
    job = state.get_job(JOB)
    assert job is not None
    state.put_job(
        Job(
            **{
                **_fields(job),
                "status": JobStatus.FAILED,
                "updated_at": T0 + 60,
                "message": "12.0% of items failed (tolerated 5.0%)",
                "version": job.version,
            }
        ),
        job.version,
    )
    report = one_pass(T0 + 2 * MIN)
    assert [c.rule for c in report.conditions] == ["job_failed"]
    (trigger,) = http_receiver.at("/pagerduty")
    assert trigger["dedup_key"] == "shardflow/job_failed/enrich-0425"
    assert "12.0% of items failed" in trigger["payload"]["summary"]
    assert one_pass(T0 + 3 * 3600).sent == []  # no reminders: it stays failed


def test_disk_and_memory_alerts_name_the_host_and_clear(
    state: MemoryStateStore,
    smtp_server: Mailbox,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    cfg = make_config(smtp_server, http_receiver, monkeypatch)
    channels = build_channels(cfg.channels)
    facts = {"free": 3 << 30, "avail": 2 << 30}

    def probe(workspace: Path) -> HostFacts:
        return HostFacts(
            "node1", str(workspace), 100 << 30, facts["free"], 64 << 30, facts["avail"]
        )

    def run(now: float) -> PassReport:
        return run_pass(
            state,
            cfg,
            channels,
            tmp_path / "a.json",
            now=now,
            workspace=tmp_path,
            probe=probe,
            job_ids=[JOB],
        )

    report = run(T0)
    assert sorted(c.key for c in report.conditions) == ["disk/host:node1", "memory/host:node1"]
    disk = next(s for s in http_receiver.at("/slack") if "disk" in s["text"])
    assert "3.0% free" in disk["text"]
    facts.update(free=50 << 30, avail=32 << 30)
    cleared = run(T0 + MIN)
    assert sorted(cleared.resolved) == ["disk/host:node1", "memory/host:node1"]


def _fields(job: Job) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(job, f.name) for f in dataclasses.fields(job)}


def test_a_malformed_channel_url_fails_only_that_channel_and_is_not_printed(
    state: MemoryStateStore,
    http_receiver: HttpReceiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "T0SECRETPATH0123456789"
    cfg = AlertsConfig.model_validate(
        {
            "rules": {"stalled": {"after": "10m"}},
            "channels": [
                # a port that is not a number: http.client raises InvalidURL with the URL
                {"type": "slack", "url": f"http://hooks.example.com:80x/services/{secret}"},
                {"type": "webhook", "url": f"{http_receiver.base}/hook"},
            ],
        }
    )
    one_pass = passes(state, cfg, tmp_path)
    one_pass(T0)
    with caplog.at_level(logging.ERROR):
        report = one_pass(T0 + 11 * MIN)
    assert [channel for _, _, channel in report.sent] == ["webhook-2"]
    assert len(http_receiver.at("/hook")) == 1
    (failure,) = report.failures
    assert failure.startswith(
        "slack-1: trigger stalled/enrich-0425: the channel's URL is malformed"
    )
    assert secret not in failure
    assert secret not in caplog.text
