"""The coordinator killed while it splits or aggregates, and job control while slots run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from shardflow.coordinator.submit import load_plan
from shardflow.manifests import sha256_bytes
from shardflow.models import JobStatus, TaskStatus
from shardflow.testing.invariants import JobOutput
from tests.faults.helpers import Dataset, FaultJob, assert_same_output, wait_for

JobFactory = Callable[..., FaultJob]
KILLED = 137  # what a fault's exit leaves, as kill -9 would


def cli(job: FaultJob, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardflow.cli.main", *args],
        cwd=job.folder,
        env=job.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def committed(job: FaultJob, n: int) -> Callable[[], bool]:
    return lambda: sum(t.status is TaskStatus.SUCCEEDED for t in job.tasks()) >= n


def test_coordinator_killed_while_splitting_resumes_to_the_same_batches(
    fault_job: JobFactory, clean_job: FaultJob, clean: JobOutput
) -> None:
    job = fault_job()
    job.run(env=job.env("mid_split:2:exit"), expect=KILLED)
    with job.state() as state:
        first = state.get_job(job.job_id)
    assert first is not None
    assert first.status is JobStatus.SPLITTING  # it died part-way through the split

    summary = job.run()
    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    assert task_parts(job) == task_parts(clean_job)


def task_parts(job: FaultJob) -> list[bytes]:
    """The job's task manifests, byte for byte, in part order."""
    plan = load_plan(job.store(), job.layout)
    return [job.store().get_bytes(job.layout.task_part(p)) for p in range(plan.parts)]


def test_coordinator_killed_while_dispatching_resumes_to_the_same_tasks(
    fault_job: JobFactory, clean_job: FaultJob, clean: JobOutput
) -> None:
    # killed after the second part of the tasks went out: slots may have run some of
    # them already; the split runs again and makes the same parts, tasks and output
    job = fault_job()
    job.run(env=job.env("mid_dispatch:2:exit"), expect=KILLED)
    with job.state() as state:
        first = state.get_job(job.job_id)
        registered = state.list_tasks(job.job_id, None)
    assert first is not None
    assert first.status is JobStatus.SPLITTING
    assert 0 < len(registered) < len(clean_job.tasks())

    summary = job.run()
    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    assert task_parts(job) == task_parts(clean_job)
    assert summary["tasks"]["total"] == len(clean_job.tasks())


def test_coordinator_killed_while_aggregating_merges_again_without_rerunning_tasks(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    job.run(env=job.env("mid_aggregation:1:exit"), expect=KILLED)
    assert job.store().head(job.layout.output_success()) is None  # nothing published yet
    with job.state() as state:
        job_row = state.get_job(job.job_id)
    assert job_row is not None
    assert job_row.status is JobStatus.AGGREGATING

    summary = job.run()
    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    assert summary["attempts"] == summary["tasks"]["total"]  # no task ran again


def test_cancel_while_slots_run_stops_them_and_keeps_committed_results(
    fault_job: JobFactory,
) -> None:
    job = fault_job()
    run = job.start(env=job.env(FAULT_ITEM_SLEEP="0.002"))
    wait_for(committed(job, 2), 60, "two commits")
    assert cli(job, "cancel", job.job_id).returncode == 0
    assert job.finish(run) == 1  # a cancelled job is not a success

    wait_for(lambda: not job.workers(), 30, "every slot to exit")
    summary = job.summary()
    assert summary["status"] == "CANCELLED"
    tasks = job.tasks()
    assert {t.status for t in tasks} <= {TaskStatus.SUCCEEDED, TaskStatus.CANCELLED}
    done = [t for t in tasks if t.status is TaskStatus.SUCCEEDED]
    assert len(done) >= 2
    assert summary["tasks"]["SUCCEEDED"] == len(done)
    store = job.store()
    for task in done:  # every committed result is still there, intact
        marker = job.marker(task.task_id)
        assert marker is not None
        assert sha256_bytes(store.get_bytes(marker.result_key)) == marker.result_sha256
    assert store.head(job.layout.output_success()) is None


@pytest.fixture(scope="module")
def purged(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> Iterator[FaultJob]:
    """A job purged with --force while its slots run; its `shardflow run` has ended."""
    job = FaultJob(tmp_path_factory.mktemp("purge") / "job", dataset)
    try:
        run = job.start(env=job.env(FAULT_ITEM_SLEEP="0.002"))
        wait_for(committed(job, 1), 60, "a commit")
        purge = cli(job, "purge", job.job_id, "--yes", "--force")
        assert purge.returncode == 0, purge.stderr
        job.finish(run)
        yield job
    finally:
        job.cleanup()


def test_purge_while_slots_run_leaves_no_worker_and_nothing_behind(purged: FaultJob) -> None:
    job = purged
    wait_for(lambda: not job.workers(), 30, "every slot to exit")
    with job.state() as state:
        assert state.get_job(job.job_id) is None
        assert state.list_tasks(job.job_id, None) == []
    leftovers = [
        p
        for root in (
            job.workspace / "store" / "jobs" / job.job_id,
            job.workspace / "logs" / job.job_id,
            job.workspace / "scratch" / job.job_id,
        )
        for p in (root.rglob("*") if root.exists() else [])
        if p.is_file()
    ]
    assert leftovers == [], leftovers


def test_a_run_whose_job_is_purged_under_it_says_so(purged: FaultJob) -> None:
    err = (purged.folder / "run-1.err").read_text()
    assert purged.procs[0].returncode == 1
    assert "Traceback" not in err, err[-2000:]
    assert "purged" in err or "not found" in err
