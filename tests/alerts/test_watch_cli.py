"""`shardflow watch --once`: one pass over a real SQLite state, as cron or Slurm runs it."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from shardflow.cli.watch import watch
from shardflow.models import Job, JobStatus
from shardflow.statestore.sqlite import open_sqlite_state
from tests.alerts.conftest import HttpReceiver


def make_state(folder: Path) -> Path:
    path = folder / ".shardflow" / "state.db"
    state = open_sqlite_state(str(path))
    now = time.time()
    state.create_job(
        Job(
            "bad-job",
            "bad",
            status=JobStatus.FAILED,
            created_at=now - 100,
            updated_at=now - 10,
            message="30.0% of items failed (tolerated 1.0%)",
        )
    )
    state.close()
    return path


def test_once_delivers_writes_metrics_and_remembers(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    state_path = make_state(tmp_path)
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"channels:\n  - {{type: webhook, url: '{http_receiver.base}/hook'}}\n"
        "rules: {disk: {enabled: false}, memory: {enabled: false}}\n",
        encoding="utf-8",
    )
    prom = tmp_path / "textfile" / "shardflow.prom"
    args = ["--state-url", str(state_path), "--once", "--config", str(config)]
    runner = CliRunner()
    first = runner.invoke(watch, [*args, "--textfile", str(prom)])
    assert first.exit_code == 0, first.output
    assert "1 alert(s) open, 1 message(s) sent" in first.output
    (hook,) = http_receiver.at("/hook")
    assert hook["rule"] == "job_failed"
    assert hook["subject"] == "bad-job"
    saved = orjson.loads((state_path.parent / "alerts-state.json").read_bytes())
    assert list(saved["open"]) == ["job_failed/bad-job"]
    names = {f.name for f in text_string_to_metric_families(prom.read_text())}
    assert "shardflow_job_status" in names
    # a second pass remembers it was said
    second = runner.invoke(watch, args)
    assert second.exit_code == 0
    assert "1 suppressed" in second.output
    assert len(http_receiver.at("/hook")) == 1


def test_once_exits_1_when_a_delivery_fails(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    state_path = make_state(tmp_path)
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"channels: [{{type: slack, url: '{http_receiver.base}/slack'}}]\n", encoding="utf-8"
    )
    http_receiver.fail_next["/slack"] = 5
    result = CliRunner().invoke(
        watch, ["bad-job", "--state-url", str(state_path), "--once", "--config", str(config)]
    )
    assert result.exit_code == 1
    assert "delivery failed: slack-1: trigger job_failed/bad-job: HTTP 500" in result.output


def test_a_bad_config_is_a_usage_error_naming_the_line(tmp_path: Path) -> None:
    state_path = make_state(tmp_path)
    config = tmp_path / "alerts.yaml"
    config.write_text("suppress: soon\n", encoding="utf-8")
    result = CliRunner().invoke(
        watch, ["--state-url", str(state_path), "--once", "--config", str(config)]
    )
    assert result.exit_code == 2
    assert f"{config}:1:" in result.output
    assert "suppress" in result.output
