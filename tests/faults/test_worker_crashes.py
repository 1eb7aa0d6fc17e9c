"""Worker processes that die or are stopped at each step of the commit protocol.

Each test runs the real `shardflow run` with a fault (``SHARDFLOW_FAULT``) or a signal
from outside, then asserts I1-I5 on what it left and I6 against a clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from shardflow.manifests import ResultMarker, decode_manifest
from shardflow.models import TaskStatus
from shardflow.testing.invariants import JobOutput
from tests.faults.helpers import FaultJob, assert_same_output, wait_for

JobFactory = Callable[..., FaultJob]


def slot_argv(job: FaultJob, slot: str, *extra: str) -> list[str]:
    """A worker slot of ``job`` started as Slurm starts one, with no coordinator."""
    return [
        *(sys.executable, "-m", "shardflow.worker", "--state", f"sqlite://{job.state_db}"),
        *("--job", job.job_id, "--workspace", str(job.workspace), "--slot", slot, *extra),
    ]


def retried(job: FaultJob) -> list[str]:
    return [t.task_id for t in job.tasks() if t.attempt > 1]


def test_worker_killed_mid_batch_in_every_slot_loses_nothing(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    # every slot process dies (exit 137, as after kill -9) the 3rd time it checkpoints
    # mid-batch, so the job only finishes through lease expiry, re-leases and resumes
    job = fault_job()
    summary = job.run(env=job.env("mid_batch:3:exit"))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    assert len(retried(job)) >= 2  # the killed attempts were re-run by other slots
    assert "resuming after item" in job.logs()  # ...from their checkpoints


def test_slot_killed_from_outside_while_it_holds_a_lease(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    run = job.start(env=job.env(FAULT_ITEM_SLEEP="0.0005"))
    wait_for(lambda: any(t.status is TaskStatus.SUCCEEDED for t in job.tasks()), 60, "a commit")

    def kill_a_lease_holder() -> str | None:
        """SIGKILL a slot that holds a lease; the task it held when it died, if any."""
        procs = {p.slot: p.pid for p in job.workers()}
        for task in job.tasks():
            if task.status is TaskStatus.LEASED and task.lease_owner in procs:
                os.kill(procs[task.lease_owner], signal.SIGKILL)
                # it may have moved on to another task between our read and the kill
                dead = [t for t in job.tasks() if t.lease_owner == task.lease_owner]
                return dead[0].task_id if dead else None
        return None

    task_id = wait_for(kill_a_lease_holder, 60, "a slot killed while holding a lease")
    assert job.finish(run) == 0, job.tail()

    assert_same_output(job.check(), clean)
    task = job.task(task_id)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.attempt >= 2  # the killed attempt never committed; a later one did


def test_crash_after_upload_before_marker_reruns_the_task_once(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    summary = job.run(env=job.env("after_result_write:1:exit", once=True))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    (task_id,) = retried(job)
    task = job.task(task_id)
    # no marker was published by attempt 1: attempt 2 ran (resuming from the checkpoint)
    # and its result is the one committed
    assert task.result_attempt == task.attempt == 2
    assert summary["attempts"] == summary["tasks"]["total"] + 1


def test_crash_after_marker_before_commit_adopts_the_marker_without_rerunning(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    summary = job.run(env=job.env("after_marker:1:exit", once=True))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    (task_id,) = retried(job)
    task = job.task(task_id)
    assert task.attempt == 2
    assert task.result_attempt == 1  # the published marker is the truth about the task
    assert "adopting the published result of attempt 1" in job.log(task_id, 2)
    # attempt 2 never processed an item, so it wrote no result object of its own
    results = [i.key for i in job.store().list(job.layout.results_prefix() + task_id + "/")]
    assert results
    assert all(key.rsplit("/", 1)[1].startswith("0001.") for key in results), results


def test_crash_between_a_group_s_flush_and_its_commit_adopts_every_marker(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    # the slot dies with a whole commit group durable but not committed: every task of it
    # is adopted by its next attempt, none runs its items again. Tasks the slot held but
    # had not published (the one it was running, messages it had fetched ahead) run again
    job = fault_job()
    summary = job.run(env=job.env("before_commit:1:exit", once=True))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    again = retried(job)
    adopted = [t for t in again if job.task(t).result_attempt == 1]
    assert adopted, again
    store = job.store()
    for task_id in again:
        task = job.task(task_id)
        assert task.attempt == 2, task
        marker = decode_manifest(
            store.get_bytes(job.layout.marker(task_id)), ResultMarker, name=task_id
        )
        # the published marker is the truth: a task with attempt 1's marker never reran
        assert marker.attempt == task.result_attempt, (marker, task)
        adopting = "adopting the published result of attempt 1" in job.log(task_id, 2)
        assert adopting == (task_id in adopted), task_id
    assert summary["attempts"] == summary["tasks"]["total"] + len(again)


def test_sigterm_during_upload_finishes_the_upload_then_the_slot_exits(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    # SIGTERM (preemption) stops a slot taking items; one that arrives while the result
    # is being uploaded lets the attempt publish and commit, then the slot exits 0
    job = fault_job()
    summary = job.run(env=job.env("mid_upload:1:term", once=True))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    assert summary["attempts"] == summary["tasks"]["total"]  # nothing was lost or redone
    with job.state() as state:
        started = [e for e in state.list_events(job.job_id) if e.kind == "slots_started"]
    assert len(started) >= 2  # the slot that was stopped was replaced while work waited
    slot_logs = sorted((job.workspace / "logs" / job.job_id).glob("slot-g001-*.log"))
    exits = [line for p in slot_logs for line in p.read_text().splitlines() if "slot exits" in line]
    # it took no task after the signal
    assert any("slot exits (stop requested); tasks: 1 succeeded" in line for line in exits), exits


def test_scratch_disk_full_releases_the_attempt_without_corrupting_its_checkpoint(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    summary = job.run(env=job.env("checkpoint:2:enospc", once=True))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    (task_id,) = retried(job)
    first = job.log(task_id, 1)
    assert "attempt failed (infrastructure)" in first
    assert "No space left on device" in first
    # the next attempt resumed after the chunk saved before the disk filled up
    assert "resuming after item" in job.log(task_id, 2)
    assert job.task(task_id).attempt == 2


def test_a_task_that_kills_its_workers_gets_no_more_than_max_attempts(
    fault_job: JobFactory,
) -> None:
    # the slots run as Slurm runs them: one after another, with no coordinator between
    job = fault_job(handler="segfault", config={"retry": {"max_attempts": 2}})
    assert job.finish(job.start(command="submit")) == 0, job.tail()
    codes = []
    for n in range(3):
        slot = subprocess.run(
            slot_argv(job, f"array-{n}", "--idle-timeout", "8"),
            cwd=job.folder,
            env=job.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        codes.append(slot.returncode)
    assert codes[:2] == [-signal.SIGSEGV] * 2  # each of the two attempts killed its slot
    # the third slot must not run the task again (its attempts are spent)
    assert job.task("t000000").attempt <= 2


@pytest.mark.parametrize("isolation", [False, True], ids=["in-process", "isolated"])
def test_sigterm_while_waiting_for_tokens_releases_the_task_and_loses_nothing(
    fault_job: JobFactory, clean: JobOutput, isolation: bool
) -> None:
    # a limit that runs dry after its burst: the slot's handler ends up waiting in
    # ctx.acquire (in the slot, or asked from the isolated child) when preemption comes
    job = fault_job(
        handler="limited",
        config={
            "rate_limits": {"api": {"rate": "1/h", "burst": 5}},
            "worker": {"isolation": isolation},
        },
    )
    assert job.finish(job.start(command="submit")) == 0, job.tail()
    slot = subprocess.Popen(
        slot_argv(job, "preempted"),
        cwd=job.folder,
        env=job.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with job.state() as state:
            wait_for(
                lambda: state.read_counters(job.job_id).get("ratelimit.api.waiting", 0) > 0,
                60,
                "the slot waiting for tokens",
            )
        slot.send_signal(signal.SIGTERM)
        _, err = slot.communicate(timeout=15)  # within a limiter sleep, not the lease
        assert slot.returncode == 0, err.decode(errors="replace")[-3000:]
    finally:
        if slot.poll() is None:
            slot.kill()
            slot.wait()

    (held,) = [t for t in job.tasks() if t.attempt > 0]
    assert held.status is TaskStatus.PENDING  # released at once, no failure recorded
    assert held.lease_owner is None
    assert "stop requested while the handler waited" in job.log(held.task_id, held.attempt)
    with job.state() as state:
        assert state.read_counters(job.job_id).get("ratelimit.api.waiting", 0) == 0

    # raised, the limit lets the job finish: the waiting items were neither lost nor failed
    limit = subprocess.run(
        [
            *(sys.executable, "-m", "shardflow.cli.main", "limit", "set", job.job_id, "api"),
            *("100000/s", "--burst", "10000"),
        ],
        cwd=job.folder,
        env=job.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert limit.returncode == 0, limit.stderr
    summary = job.run()
    assert summary["status"] == "SUCCEEDED", job.tail()
    assert_same_output(job.check(), clean)
