"""Two holders of one task: stale workers, duplicate deliveries, the same job run twice.

Whatever the queue and the processes do, only the version fence and the create-only
marker decide who commits; the output must equal a clean run's.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from shardflow.models import TaskStatus
from shardflow.queue.local import open_local_queue
from shardflow.testing.invariants import JobOutput
from shardflow.worker.env import task_message
from tests.faults.helpers import FaultJob, Proc, assert_same_output, wait_for

JobFactory = Callable[..., FaultJob]
SHORT_LEASE = {"worker": {"lease_ttl": "2s", "heartbeat": "0.5s"}}
# the items take a little time, so the other slot is still busy when the lease lapses
SLOW = {"FAULT_ITEM_SLEEP": "0.0003"}


def stopped_worker(job: FaultJob) -> Proc:
    procs = wait_for(
        lambda: [p for p in job.workers() if p.state == "T"], 60, "a worker to stop itself"
    )
    return procs[0]  # type: ignore[no-any-return]


def task_held_by(job: FaultJob, slot: str) -> str:
    """The task whose lease ``slot`` holds (or held: it may have lapsed meanwhile)."""
    tasks = [t for t in job.tasks() if t.lease_owner == slot or t.attempt >= 2]
    assert tasks, f"no task is or was held by {slot}"
    return tasks[0].task_id


@pytest.mark.parametrize(
    "point",
    [
        # stopped mid-batch: on SIGCONT its heartbeat's fenced renewal is refused
        "mid_batch",
        # stopped with its result uploaded: on SIGCONT it races to publish; the marker
        # is create-only and its commit is fenced, so the new holder's result stands
        "after_result_write",
    ],
)
def test_stale_worker_woken_after_its_lease_was_taken_over_commits_nothing(
    fault_job: JobFactory, clean: JobOutput, point: str
) -> None:
    job = fault_job(config=SHORT_LEASE)
    run = job.start(env=job.env(f"{point}:1:stop", once=True, **SLOW))
    stale = stopped_worker(job)
    task_id = task_held_by(job, stale.slot)
    # another slot takes the task once the lease lapses, and commits it
    wait_for(
        lambda: job.task(task_id).status is TaskStatus.SUCCEEDED, 60, f"{task_id} to be committed"
    )
    os.kill(stale.pid, signal.SIGCONT)
    assert job.finish(run) == 0, job.tail()

    assert_same_output(job.check(), clean)
    task = job.task(task_id)
    assert task.attempt >= 2
    assert task.result_attempt != 1  # the stale attempt's result never became the task's
    stale_log = job.log(task_id, 1)
    assert "lease lost" in stale_log or "commit refused" in stale_log, stale_log
    assert "task committed" not in stale_log
    if point == "after_result_write" and "published first; adopting it" in stale_log:
        # it lost the marker race, so it deleted its own attempt objects
        assert job.store().head(job.layout.result(task_id, 1)) is None


def test_the_only_slot_stopped_past_its_lease_is_replaced(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job(config={**SHORT_LEASE, "resources": {"slots": 1}})
    run = job.start(env=job.env("mid_batch:1:stop", once=True))
    stale = stopped_worker(job)
    try:
        # the job must finish without the stopped slot (a Slurm node can hang like this)
        wait_for(
            lambda: job.summary()["tasks"]["SUCCEEDED"] == len(job.tasks()),
            12,
            "every task to be committed while the only slot is stopped",
        )
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    assert job.finish(run) == 0, job.tail()
    assert_same_output(job.check(), clean)


def test_every_task_delivered_twice_is_committed_once(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    submit = job.start(command="submit")
    assert job.finish(submit) == 0, job.tail()
    tasks = job.tasks()
    queue = open_local_queue(str(job.state_db), job.job_id)
    try:
        # every message once more, and then the whole lot again: three deliveries each
        queue.send_many([task_message(job.job_id, t.task_id) for t in tasks] * 2)
        assert queue.depth().total == 3 * len(tasks)
    finally:
        queue.close()

    summary = job.run()
    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    # the lease turned every extra delivery away: one attempt per task, no re-runs
    assert summary["attempts"] == len(tasks)
    assert all(t.attempt == 1 for t in job.tasks())


def test_the_same_job_run_twice_at_once_gives_one_consistent_output(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    # a deep tree (fan-in 2) keeps both coordinators aggregating at the same time
    job = fault_job(config={"aggregate": {"fan_in": 2}})
    runs = [job.start("--json"), job.start("--json")]
    codes = [job.finish(r) for r in runs]

    assert codes == [0, 0], job.tail()
    assert_same_output(job.check(), clean)
    assert all(t.attempt <= 2 for t in job.tasks())
