"""Job control through the real command line: pause, resume, cancel, retry, purge, recover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from shardflow.layout import Layout
from shardflow.models import JobStatus, TaskStatus
from shardflow.objectstore.local import LocalObjectStore
from shardflow.statestore.base import lease_task, task_counts
from shardflow.statestore.sqlite import SqliteStateStore
from shardflow.testing.synthetic import write_jsonl
from tests.e2e.helpers import run_json, shardflow, write_job

HANDLERS = Path(__file__).with_name("handlers_control.py")


def make_job(
    folder: Path, handler: str, records: int = 2000, batch: int = 200, **extra: str
) -> Path:
    data = folder / "in.jsonl"
    write_jsonl(data, records, seed=3)
    lines = "\n".join(f"{k}: {v}" for k, v in extra.items())
    return write_job(
        folder / "job.yaml",
        f"""
name: control-test
handler: {HANDLERS}:{handler}
input: {{path: {data}, id_field: id}}
batching: {{records: {batch}}}
resources: {{slots: 2}}
{lines}
""",
    )


def state(folder: Path) -> SqliteStateStore:
    return SqliteStateStore(folder / ".shardflow" / "state.db")


def wait_for(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


def succeeded(folder: Path, job_id: str) -> int:
    store = state(folder)
    try:
        return task_counts(store.read_counters(job_id))[TaskStatus.SUCCEEDED]
    finally:
        store.close()


def test_pause_and_resume_are_idempotent_and_recorded(tmp_path: Path) -> None:
    job = make_job(tmp_path, "slow")
    shardflow(["submit", str(job), "--job-id", "pz"], tmp_path, check=0)

    assert "paused pz" in shardflow(["pause", "pz"], tmp_path, check=0).stdout
    assert "already paused" in shardflow(["pause", "pz"], tmp_path, check=0).stdout
    assert run_json(["status", "pz"], tmp_path, check=0)["paused"] is True
    assert "resumed pz" in shardflow(["resume", "pz"], tmp_path, check=0).stdout
    summary = run_json(["run", str(job), "--job-id", "pz"], tmp_path, check=0)
    assert summary["status"] == "SUCCEEDED"
    kinds = [e.kind for e in state(tmp_path).list_events("pz")]
    assert kinds.count("paused") == 1
    assert kinds.count("resumed") == 1
    assert all(
        e.actor.startswith("cli:") for e in state(tmp_path).list_events("pz") if e.kind == "paused"
    )


def test_control_commands_refuse_unknown_jobs_with_exit_2(tmp_path: Path) -> None:
    make_job(tmp_path, "slow")
    shardflow(["submit", str(tmp_path / "job.yaml"), "--job-id", "known"], tmp_path, check=0)
    for cmd in ("pause", "resume", "cancel", "retry", "recover", "status"):
        proc = shardflow([cmd, "nope"], tmp_path, check=2)
        assert "job nope not found" in proc.stderr
    proc = shardflow(["pause", "../etc"], tmp_path, check=2)
    assert "invalid job id" in proc.stderr


def test_cancel_during_a_run_stops_slots_and_keeps_finished_results(tmp_path: Path) -> None:
    job = make_job(tmp_path, "slow", records=4000, batch=100)
    run = subprocess.Popen(
        [sys.executable, "-m", "shardflow.cli.main", "run", str(job), "--job-id", "cx"],
        cwd=tmp_path,
        env={**os.environ, "SLOW_SECONDS": "0.003"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: succeeded(tmp_path, "cx") >= 2)
        shardflow(["cancel", "cx"], tmp_path, check=0)
        _, err = run.communicate(timeout=60)
        assert run.returncode == 1, err
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    store = state(tmp_path)
    job_row = store.get_job("cx")
    assert job_row is not None
    assert job_row.status is JobStatus.CANCELLED
    counts = task_counts(store.read_counters("cx"))
    real = dict.fromkeys(TaskStatus, 0)
    for task in store.list_tasks("cx", None, limit=10_000):
        real[task.status] += 1
    assert counts == real  # the counters agree with the rows they count
    assert real[TaskStatus.PENDING] == 0
    assert real[TaskStatus.LEASED] == 0
    assert real[TaskStatus.SUCCEEDED] >= 2
    objects = LocalObjectStore(tmp_path / ".shardflow" / "store")
    done = store.list_tasks("cx", TaskStatus.SUCCEEDED)
    assert all(objects.head(Layout("cx").marker(t.task_id)) for t in done)
    # every slot process has gone: no worker for this job is left running
    wait_for(lambda: not _worker_pids("cx"), timeout=30)
    assert "already cancelled" in shardflow(["cancel", "cx"], tmp_path, check=0).stdout


def _worker_pids(job_id: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [
        int(line.split()[0])
        for line in out.stdout.splitlines()
        if "shardflow.worker" in line and f"--job {job_id} " in line + " "
    ]


def test_pause_and_cancel_from_two_processes_at_once(tmp_path: Path) -> None:
    job = make_job(tmp_path, "slow")
    shardflow(["submit", str(job), "--job-id", "race"], tmp_path, check=0)
    cmd = [sys.executable, "-m", "shardflow.cli.main"]
    procs = [
        subprocess.Popen(
            [*cmd, verb, "race"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for verb in ("pause", "cancel")
    ]
    for p in procs:
        p.communicate(timeout=60)
    codes = [p.returncode for p in procs]
    # cancel always wins in the end; pause either landed first or found a cancelled job
    assert codes[1] == 0
    assert codes[0] in (0, 2)
    store = state(tmp_path)
    job_row = store.get_job("race")
    assert job_row is not None
    assert job_row.status is JobStatus.CANCELLED
    counts = task_counts(store.read_counters("race"))
    assert counts[TaskStatus.CANCELLED] == job_row.total_tasks
    assert sum(counts.values()) == job_row.total_tasks
    assert [e.kind for e in store.list_events("race")].count("cancelled") == 1


def test_retry_redrives_failed_tasks_to_success(tmp_path: Path) -> None:
    flag = tmp_path / "crash.flag"
    flag.write_text("on")
    job = make_job(tmp_path, "crashy", retry="{max_attempts: 2, tolerated_failure_percent: 0}")
    env = {"CRASH_FLAG": str(flag)}
    first = run_json(["run", str(job), "--job-id", "rt"], tmp_path, env=env, check=1)
    assert first["status"] == "FAILED"
    assert first["tasks"]["FAILED"] == 1
    assert first["items"]["failed"] == 200  # every item of the failed task is accounted for

    flag.unlink()
    second = run_json(["retry", "rt"], tmp_path, env=env, check=0)
    assert second["status"] == "SUCCEEDED"
    assert second["tasks"]["SUCCEEDED"] == second["tasks"]["total"]
    assert "no failed tasks" in shardflow(["retry", "rt"], tmp_path, check=0).stdout


def test_purge_asks_refuses_and_removes_everything(tmp_path: Path) -> None:
    job = make_job(tmp_path, "slow", records=400, worker="{scratch: node-scratch}")
    run_json(["run", str(job), "--job-id", "pg"], tmp_path, check=0)
    store_root = tmp_path / ".shardflow" / "store" / "jobs" / "pg"
    assert store_root.exists()
    # what a slot killed mid-task leaves in the job's worker.scratch
    left = tmp_path / "node-scratch" / "pg" / "t000000"
    left.mkdir(parents=True)
    (left / "checkpoint.db").write_bytes(b"partial")
    mine = tmp_path / "scratch" / "pg"  # the user's own folder, not shardflow's
    mine.mkdir(parents=True)

    proc = subprocess.run(
        [sys.executable, "-m", "shardflow.cli.main", "purge", "pg"],
        cwd=tmp_path,
        input="n\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert store_root.exists()
    shardflow(["purge", "pg", "--yes"], tmp_path, check=0)
    assert not store_root.exists()
    assert not (tmp_path / ".shardflow" / "logs" / "pg").exists()
    assert not (tmp_path / "node-scratch" / "pg").exists()
    assert (tmp_path / "node-scratch").exists()  # other jobs' scratch is not touched
    assert mine.exists()
    shardflow(["status", "pg"], tmp_path, check=2)


def test_recover_requeues_a_task_held_by_a_dead_worker(tmp_path: Path) -> None:
    job = make_job(tmp_path, "slow", records=400)
    shardflow(["submit", str(job), "--job-id", "rc"], tmp_path, check=0)
    store = state(tmp_path)
    held = lease_task(store, "rc", "t000000", owner="ghost", ttl=0.5, now=time.time() - 10)
    assert held is not None

    report = orjson.loads(shardflow(["recover", "rc", "--json"], tmp_path, check=0).stdout)
    assert report["detail"]["expired_leases"] == ["t000000"]
    assert "nothing was stuck" in shardflow(["recover", "rc"], tmp_path, check=0).stdout
    assert run_json(["run", str(job), "--job-id", "rc"], tmp_path, check=0)["status"] == "SUCCEEDED"


@pytest.mark.parametrize("verb", ["pause", "cancel"])
def test_commands_on_a_finished_job_explain_what_to_do(tmp_path: Path, verb: str) -> None:
    job = make_job(tmp_path, "slow", records=200)
    run_json(["run", str(job), "--job-id", "fin"], tmp_path, check=0)
    proc = shardflow([verb, "fin"], tmp_path, check=2)
    assert "SUCCEEDED" in proc.stderr
