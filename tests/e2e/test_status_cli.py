"""`shardflow status` views, filters and shell completion on a real finished job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from shardflow.models import Job, Task, TaskStatus
from shardflow.statestore.base import fail_task, lease_task
from shardflow.statestore.sqlite import SqliteStateStore
from tests.e2e.helpers import REPO, run_json, shardflow

QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("status")
    run_json(["run", str(QUICKSTART), "--job-id", "done"], folder, check=0)
    return folder


def test_summary_groups_item_errors_by_class(finished: Path) -> None:
    summary = run_json(["status", "done"], finished, check=0)
    assert summary["errors"] == [{"class": "permanent", "tasks": 0, "items": 5, "sample": None}]
    text = shardflow(["status", "done"], finished, check=0).stdout
    assert "permanent: 0 task(s), 5 item(s)" in text


def test_detail_shows_groups_and_slowest_tasks(finished: Path) -> None:
    summary = run_json(["status", "done", "--detail"], finished, check=0)
    detail = summary["detail"]
    assert detail["task_groups"][0]["group"] == "g001"
    assert len(detail["slowest"]) == 5
    seconds = [r["seconds"] for r in detail["slowest"]]
    assert seconds == sorted(seconds, reverse=True)
    assert detail["failing"] == []


def test_state_filter_and_since(finished: Path) -> None:
    rows = orjson.loads(
        shardflow(["status", "done", "--state", "succeeded", "--json"], finished, check=0).stdout
    )
    assert [r["task_id"] for r in rows] == [f"t{i:06d}" for i in range(9)]
    recent = orjson.loads(
        shardflow(
            ["status", "done", "--state", "succeeded", "--since", "1h", "--limit", "2", "--json"],
            finished,
            check=0,
        ).stdout
    )
    assert len(recent) == 2
    none = shardflow(["status", "done", "--state", "failed"], finished, check=0).stdout
    assert "no tasks match" in none
    bad = shardflow(
        ["status", "done", "--state", "succeeded", "--since", "soon"], finished, check=2
    )
    assert "--since takes a duration" in bad.stderr


def test_failing_tasks_appear_with_their_error(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / ".shardflow" / "state.db")
    store.create_job(Job(job_id="j", name="j", created_at=time.time(), total_tasks=2))
    store.register_tasks([Task("j", "t000000", "b000000"), Task("j", "t000001", "b000001")])
    now = time.time()
    leased = lease_task(store, "j", "t000000", owner="w", ttl=60, now=now)
    assert leased is not None
    from shardflow.models import ErrorClass

    fail_task(store, leased, now=now, error_class=ErrorClass.INFRASTRUCTURE, message="node lost")
    summary = run_json(["status", "j", "--detail"], tmp_path, check=0)
    assert summary["detail"]["failing"][0]["error"] == "node lost"
    assert summary["errors"][0] == {
        "class": "infrastructure",
        "tasks": 1,
        "items": 0,
        "sample": "node lost",
    }
    assert summary["tasks"][TaskStatus.PENDING.value] == 1


def test_shell_completion_offers_local_job_ids(finished: Path) -> None:
    env = {
        **os.environ,
        "COMP_WORDS": "shardflow status d",
        "COMP_CWORD": "2",
        "_SHARDFLOW_COMPLETE": "bash_complete",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "shardflow.cli.main"],
        cwd=finished,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip().splitlines() == ["plain,done"]


def test_every_command_has_help_with_an_example(tmp_path: Path) -> None:
    from shardflow.cli.main import COMMANDS

    for name in COMMANDS:
        proc = shardflow([name, "--help"], tmp_path)
        assert proc.returncode == 0, (name, proc.stderr)
        assert "Example" in proc.stdout or "example" in proc.stdout, name


def test_logs_of_a_task_that_logged_nothing_say_so(finished: Path) -> None:
    # a clean task at the default level writes no log file (10,000 tasks, no 10,000 files)
    text = shardflow(["logs", "done", "t000001"], finished, check=0).stdout
    assert "t000001 logged nothing at INFO or above in its 1 attempt(s)" in text
    assert "SUCCEEDED" in text
    listing = shardflow(["logs", "done"], finished, check=0).stdout
    assert "t000001.0001.log" not in listing
    shardflow(["logs", "done", "t999999"], finished, check=2)


def test_logs_show_a_task_s_structured_log_at_debug(tmp_path: Path) -> None:
    run_json(
        ["run", str(QUICKSTART), "--job-id", "debug", "--set", "logging.level=DEBUG"],
        tmp_path,
        check=0,
    )
    text = shardflow(["logs", "debug", "t000001"], tmp_path, check=0).stdout
    records = [orjson.loads(line) for line in text.splitlines()]
    assert any("attempt 1 of t000001 started" in r["msg"] for r in records)
    assert all(r["job_id"] == "debug" and r["task_id"] == "t000001" for r in records)
    assert all(r["attempt"] == 1 and r["slot"].startswith("local-") for r in records)
    listing = shardflow(["logs", "debug"], tmp_path, check=0).stdout
    assert "t000001.0001.log" in listing
