"""A 200,000-record job with malformed lines, duplicate keys and failing items, checked
against DESIGN.md's invariants on its real output; then killed mid-run and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from shardflow.models import TaskStatus
from shardflow.objectstore.local import LocalObjectStore
from shardflow.statestore.base import task_counts
from shardflow.statestore.sqlite import SqliteStateStore
from shardflow.testing.invariants import check_invariants, read_job_output
from shardflow.testing.synthetic import Stats, write_jsonl
from tests.e2e.handlers_e2e import fails
from tests.e2e.helpers import run_json, write_job

HANDLER = Path(__file__).with_name("handlers_e2e.py")
RECORDS = 200_000


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Stats, set[str], set[str]]:
    folder = tmp_path_factory.mktemp("data")
    path = folder / "users.jsonl"
    stats = write_jsonl(path, RECORDS, seed=11, malformed_every=997, duplicate_every=5000)
    keys: set[str] = set()
    failing: set[str] = set()
    for line in path.read_bytes().splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec["id"] not in keys:
            keys.add(rec["id"])
            if fails(rec):
                failing.add(rec["id"])
    return path, stats, keys, failing


def job_file(folder: Path, data: Path, slots: int = 2) -> Path:
    return write_job(
        folder / "job.yaml",
        f"""
name: large-e2e
handler: {HANDLER}:enrich
input: {{path: {data}, id_field: id}}
batching: {{records: 5000}}
retry: {{tolerated_failure_percent: 5}}
resources: {{slots: {slots}}}
worker: {{checkpoint_every: 1000}}
""",
    )


def test_large_run_keeps_every_invariant(
    tmp_path: Path, dataset: tuple[Path, Stats, set[str], set[str]]
) -> None:
    data, stats, keys, failing = dataset
    summary = run_json(
        ["run", str(job_file(tmp_path, data)), "--job-id", "large"], tmp_path, check=0
    )

    assert summary["status"] == "SUCCEEDED"
    out = read_job_output(LocalObjectStore(tmp_path / ".shardflow" / "store"), "large")
    check_invariants(
        out,
        input_records=stats.records + stats.malformed,
        expected_rejects=stats.malformed + stats.duplicates,
        expected_keys=keys,
    )
    assert set(out.failure_keys()) == failing
    assert sorted(out.rejects.column("line").to_pylist())[:3] == sorted(stats.malformed_lines)[:3]
    assert summary["items"]["failed"] == len(failing)
    assert summary["items"]["rejected"] == stats.malformed + stats.duplicates


def _wait_for_progress(state_db: Path, job_id: str, tasks: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        if state_db.exists():
            store = SqliteStateStore(state_db)
            try:
                counts = task_counts(store.read_counters(job_id))
            finally:
                store.close()
            if counts[TaskStatus.SUCCEEDED] >= tasks:
                return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} made no progress before the deadline")


def test_killed_run_resumes_to_the_same_output_as_a_clean_run(
    tmp_path: Path, dataset: tuple[Path, Stats, set[str], set[str]]
) -> None:
    data, stats, _, _ = dataset
    clean_dir, faulty_dir = tmp_path / "clean", tmp_path / "faulty"
    clean_dir.mkdir()
    faulty_dir.mkdir()
    run_json(["run", str(job_file(clean_dir, data)), "--job-id", "same"], clean_dir, check=0)

    job = job_file(faulty_dir, data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardflow.cli.main", "run", str(job), "--job-id", "same"],
        cwd=faulty_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_progress(
            faulty_dir / ".shardflow" / "state.db", "same", 3, time.monotonic() + 120
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and every slot, mid-write
        proc.wait()

    resumed = run_json(["run", str(job), "--job-id", "same"], faulty_dir, check=0)
    assert resumed["status"] == "SUCCEEDED"
    clean = read_job_output(LocalObjectStore(clean_dir / ".shardflow" / "store"), "same")
    faulty = read_job_output(LocalObjectStore(faulty_dir / ".shardflow" / "store"), "same")
    assert faulty.results.equals(clean.results)  # I6: row for row
    assert faulty.failures.drop_columns(["attempt"]).equals(
        clean.failures.drop_columns(["attempt"])
    )
    assert faulty.rejects.num_rows == clean.rejects.num_rows == stats.malformed + stats.duplicates
