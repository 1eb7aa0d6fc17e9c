"""Whole jobs on the real single-node Slurm cluster that CI starts (scripts/slurm-dev)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from shardflow.objectstore.local import LocalObjectStore
from shardflow.statestore.sqlite import SqliteStateStore
from shardflow.testing.invariants import check_invariants, read_job_output
from shardflow.testing.synthetic import write_jsonl
from tests.e2e.helpers import REPO, run_json, shardflow, write_job
from tests.plugins.slurm import SlurmCluster

pytestmark = pytest.mark.slurm

QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"
HANDLERS = REPO / "tests" / "e2e" / "handlers_control.py"
SLURM = ["--set", "backends.executor=slurm"]


def squeue_ids(name_part: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=False
    ).stdout
    return [line.split()[0] for line in out.splitlines() if name_part in line]


def saved_chunks(checkpoint_db: Path) -> int:
    import sqlite3

    if not checkpoint_db.exists():
        return 0
    db = sqlite3.connect(f"file:{checkpoint_db}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the table is not created yet
    finally:
        db.close()


def wait_status(
    folder: Path, job_id: str, wanted: set[str], timeout: float = 120
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = run_json(["status", job_id], folder, check=0)
        if summary["status"] in wanted:
            return summary
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {wanted}")


def test_quickstart_on_slurm_gives_the_local_rows(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir()
    slurm_dir.mkdir()
    run_json(["run", str(QUICKSTART), "--job-id", "qs"], local_dir, check=0)
    summary = run_json(["run", str(QUICKSTART), "--job-id", "qs", *SLURM], slurm_dir, check=0)

    assert summary["status"] == "SUCCEEDED"
    on_slurm = read_job_output(LocalObjectStore(slurm_dir / ".shardflow" / "store"), "qs")
    local = read_job_output(LocalObjectStore(local_dir / ".shardflow" / "store"), "qs")
    check_invariants(on_slurm, input_records=2002, expected_rejects=2)
    assert on_slurm.results.equals(local.results)
    groups = SqliteStateStore(slurm_dir / ".shardflow" / "state.db").list_task_groups("qs")
    assert all(g.executor == "slurm" for g in groups)
    assert all(h.isdigit() for g in groups for h in g.handles)  # Slurm array job ids
    detail = run_json(["status", "qs", "--detail"], slurm_dir, check=0)["detail"]
    states = detail["task_groups"][0]["slot_states"]
    assert states
    assert set(states.values()) <= {"DONE", "RUNNING", "PENDING"}
    assert all(k.startswith(groups[0].handles[0] + "_") for k in states)


def test_submit_returns_at_once_and_the_reconcile_chain_finishes(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    out = shardflow(["submit", str(QUICKSTART), "--job-id", "chain", *SLURM], tmp_path, check=0)
    assert "submitted job chain" in out.stdout
    summary = wait_status(tmp_path, "chain", {"SUCCEEDED", "FAILED"})
    assert summary["status"] == "SUCCEEDED"
    check_invariants(
        read_job_output(LocalObjectStore(tmp_path / ".shardflow" / "store"), "chain"),
        input_records=2002,
        expected_rejects=2,
    )
    logs = sorted(p.name for p in (tmp_path / ".shardflow" / "logs" / "chain").glob("slurm-*"))
    assert any(name.startswith("slurm-reconcile-") for name in logs)


def test_a_handler_that_cannot_be_loaded_fails_the_job_through_the_chain(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    # no `run` waits here: the array's slots report the load failure and the reconcile
    # chain's next link fails the job, without starting more slots
    out = shardflow(
        ["submit", str(QUICKSTART), "--job-id", "noload", *SLURM, "--set",
         "handler=enrich.py:nofunc"],
        tmp_path,
        check=0,
    )  # fmt: skip
    assert "submitted job noload" in out.stdout
    summary = wait_status(tmp_path, "noload", {"SUCCEEDED", "FAILED"})
    assert summary["status"] == "FAILED"
    assert "the handler cannot be loaded" in summary["message"]
    assert "has no 'nofunc'" in summary["message"]
    groups = SqliteStateStore(tmp_path / ".shardflow" / "state.db").list_task_groups("noload")
    assert [g.executor for g in groups].count("slurm") == 1  # no slot was started again


def test_slots_above_max_array_size_are_split_into_arrays(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    data = tmp_path / "in.jsonl"
    write_jsonl(data, 1200, seed=5)
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: many-slots
handler: {HANDLERS}:slow
input: {{path: {data}, id_field: id}}
batching: {{records: 100}}
resources: {{slots: 5}}
slurm: {{max_array_size: 2}}
backends: {{executor: slurm}}
""",
    )
    summary = run_json(["run", str(job), "--job-id", "split"], tmp_path, check=0)
    assert summary["status"] == "SUCCEEDED"
    first = SqliteStateStore(tmp_path / ".shardflow" / "state.db").list_task_groups("split")[0]
    assert first.slots == 5
    assert len(first.handles) == 3  # arrays of 2 + 2 + 1 elements


def test_dry_run_prints_the_exact_sbatch_script(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    plan = orjson.loads(
        shardflow(
            ["submit", str(QUICKSTART), "--dry-run", "--json", *SLURM], tmp_path, check=0
        ).stdout
    )
    (script,) = plan["sbatch_scripts"]
    text = script["script"]
    assert text.startswith("#!/bin/bash")
    assert "#SBATCH --array=0-1" in text
    assert "#SBATCH --signal=B:TERM@" in text
    assert "#SBATCH --requeue" in text
    assert "shardflow.worker" in text
    assert not (tmp_path / ".shardflow" / "state.db").exists()  # nothing was written


def test_a_preempted_slot_resumes_its_task_from_the_checkpoint(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    data = tmp_path / "in.jsonl"
    write_jsonl(data, 3000, seed=6)
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: preempt
handler: {HANDLERS}:slow
input: {{path: {data}, id_field: id}}
batching: {{records: 3000}}
resources: {{slots: 1}}
worker: {{checkpoint_interval: 0.2s}}
backends: {{executor: slurm}}
""",
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "shardflow.cli.main", "run", str(job), "--job-id", "pre", "--json"],
        cwd=tmp_path,
        env={**os.environ, "SLOW_SECONDS": "0.002"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ckpt = tmp_path / ".shardflow" / "scratch" / "pre" / "t000000" / "a0001" / "checkpoint.db"
    deadline = time.monotonic() + 90
    while saved_chunks(ckpt) < 2:  # preempt only once some progress is durable
        assert time.monotonic() < deadline, "the slot never checkpointed"
        time.sleep(0.1)
    for job_id in squeue_ids("sf-pre"):
        subprocess.run(["scancel", "--signal=TERM", "--batch", job_id], check=False)
    out, err = run.communicate(timeout=180)
    assert run.returncode == 0, err[-3000:]
    assert orjson.loads(out.strip().splitlines()[-1])["status"] == "SUCCEEDED"
    second = tmp_path / ".shardflow" / "logs" / "pre" / "t000000.0002.log"
    assert second.exists(), "the task was not released and leased again"
    assert "resuming after item" in second.read_text()
    check_invariants(
        read_job_output(LocalObjectStore(tmp_path / ".shardflow" / "store"), "pre"),
        input_records=3000,
        expected_rejects=0,
    )


def test_cancel_during_a_run_leaves_no_slurm_jobs(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    data = tmp_path / "in.jsonl"
    write_jsonl(data, 4000, seed=7)
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: cancel-me
handler: {HANDLERS}:slow
input: {{path: {data}, id_field: id}}
batching: {{records: 200}}
resources: {{slots: 2}}
backends: {{executor: slurm}}
""",
    )
    shardflow(
        ["submit", str(job), "--job-id", "cxl"], tmp_path, env={"SLOW_SECONDS": "0.01"}, check=0
    )
    deadline = time.monotonic() + 60
    while not squeue_ids("sf-cxl") and time.monotonic() < deadline:
        time.sleep(0.2)
    shardflow(["cancel", "cxl"], tmp_path, check=0)
    deadline = time.monotonic() + 60
    while squeue_ids("sf-cxl") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert squeue_ids("sf-cxl") == []
    assert run_json(["status", "cxl"], tmp_path, check=0)["status"] == "CANCELLED"
