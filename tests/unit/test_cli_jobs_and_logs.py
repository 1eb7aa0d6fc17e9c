"""`shardflow jobs`, `shardflow status --state` and `shardflow logs` over a state store
prepared in place (no job is run): what a user sees, and the errors they get."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from shardflow.cli.main import cli
from shardflow.layout import LocalPaths
from shardflow.models import ErrorClass, Job, JobStatus, Task
from shardflow.statestore.base import fail_task, lease_task
from shardflow.statestore.sqlite import SqliteStateStore

JOB = "enrich-20260101-0000-ab12"


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    state = SqliteStateStore(tmp_path / "state.db")
    state.create_job(
        Job(
            job_id=JOB,
            name="enrich",
            status=JobStatus.RUNNING,
            created_at=1_767_225_600.0,
            total_tasks=2,
            total_items=20,
            config={"workspace": str(tmp_path / "ws")},
        )
    )
    state.register_tasks(
        [Task(job_id=JOB, task_id=t, batch_id=f"b{t}") for t in ("t000001", "t000002")]
    )
    task = lease_task(state, JOB, "t000002", owner="w1", ttl=30, now=100.0)
    assert task is not None
    fail_task(state, task, now=110.0, error_class=ErrorClass.PERMANENT, message="bad schema")
    state.close()
    return f"sqlite:///{tmp_path / 'state.db'}"


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_jobs_lists_each_job_with_its_counts(state_url: str) -> None:
    code, out, _ = _cli("jobs", "--state-url", state_url)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["JOB", "STATUS", "TASKS", "ITEMS"]
    assert row.split()[:3] == [JOB, "RUNNING", "0/2"]
    code, out, _ = _cli("jobs", "--state-url", state_url, "--json")
    assert [j["job_id"] for j in orjson.loads(out)] == [JOB]


def test_jobs_on_an_empty_store_says_how_to_start(tmp_path: Path) -> None:
    SqliteStateStore(tmp_path / "empty.db").close()
    code, out, _ = _cli("jobs", "--state-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert code == 0
    assert "no jobs yet" in out


def test_status_with_a_state_lists_those_tasks(state_url: str) -> None:
    code, out, _ = _cli("status", JOB, "--state-url", state_url, "--state", "failed")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["TASK", "STATUS", "ATT", "SECONDS"]
    assert lines[1].split()[:3] == ["t000002", "FAILED", "1"]
    assert "bad schema" in lines[1]
    code, out, _ = _cli("status", JOB, "--state-url", state_url, "--state", "succeeded")
    assert out.strip() == "no tasks match"


def test_status_refuses_a_since_it_cannot_read(state_url: str) -> None:
    code, _, err = _cli(
        "status", JOB, "--state-url", state_url, "--state", "failed", "--since", "soon"
    )
    assert code == 2
    assert err.startswith("error: ")


def test_logs_lists_a_jobs_logs_or_says_there_are_none(state_url: str, tmp_path: Path) -> None:
    code, out, _ = _cli("logs", JOB, "--state-url", state_url)
    assert (code, out.strip()) == (0, "no logs yet")
    paths = LocalPaths(tmp_path / "ws", tmp_path / "ws" / "scratch")
    log = paths.log_file(JOB, "t000002", 1)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('{"msg": "bad schema"}\n', encoding="utf-8")
    code, out, _ = _cli("logs", JOB, "--state-url", state_url)
    assert (code, out.splitlines()) == (0, [log.name])
    code, out, _ = _cli("logs", JOB, "t000002", "--state-url", state_url)
    assert (code, out) == (0, '{"msg": "bad schema"}\n')


@pytest.mark.parametrize(
    ("task", "message"),
    [("../etc", "task id"), ("t000099", "task t000099 not found")],
)
def test_logs_of_a_task_that_is_not_there(state_url: str, task: str, message: str) -> None:
    code, _, err = _cli("logs", JOB, task, "--state-url", state_url)
    assert code == 2
    assert message in err


def test_a_missing_state_store_names_the_place_it_looked(tmp_path: Path) -> None:
    code, _, err = _cli("jobs", "--state-url", str(tmp_path / "nowhere.db"))
    assert code == 2
    assert "no shardflow state at" in err
    assert "hint: run this from the folder" in err


def test_status_detail_shows_task_groups_and_failing_tasks(state_url: str) -> None:
    from shardflow.backends import open_state_store
    from shardflow.models import TaskGroup

    state = open_state_store(state_url)
    state.put_task_group(TaskGroup(JOB, "g001", 1, 2, "local", ("pid:11", "pid:12"), 50.0))
    state.close()
    code, out, _ = _cli("status", JOB, "--state-url", state_url, "--detail")
    assert code == 0
    assert "group    g001 (round 1): 2 local slot(s) pid:11 pid:12" in out
    assert any(
        line.split()[:4] == ["failing", "t000002", "attempt", "1"] and "bad schema" in line
        for line in out.splitlines()
    )
