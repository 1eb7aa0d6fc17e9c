"""Faults inside one item or one result: handler errors, hangs, segfaults, malformed
input, and a result object corrupted after its checksum was taken."""

from __future__ import annotations

from collections.abc import Callable, Collection

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shardflow.models import TaskStatus
from shardflow.testing.invariants import JobOutput
from tests.faults.handlers import HANG_ID, SEGV_ID
from tests.faults.helpers import Dataset, FaultJob, assert_same_output, without_attempts

JobFactory = Callable[..., FaultJob]


def drop_keys(table: pa.Table, column: str, keys: Collection[str]) -> pa.Table:
    return table.filter(pc.invert(pc.is_in(table.column(column), pa.array(sorted(keys)))))


def assert_same_except(faulty: JobOutput, clean: JobOutput, keys: Collection[str]) -> None:
    """I6 for every item but ``keys``, which the fault turned into failure records."""
    assert set(keys) <= set(faulty.failure_keys())
    assert faulty.results.equals(drop_keys(clean.results, "_key", keys))
    assert without_attempts(drop_keys(faulty.failures, "key", keys)).equals(
        without_attempts(drop_keys(clean.failures, "key", keys))
    )
    assert without_attempts(faulty.rejects).equals(without_attempts(clean.rejects))


def failure(out: JobOutput, key: str) -> dict[str, object]:
    (row,) = out.failures.filter(pc.equal(out.failures.column("key"), pa.scalar(key))).to_pylist()
    return row


def test_malformed_lines_are_rejected_with_their_line_numbers(
    clean: JobOutput, dataset: Dataset
) -> None:
    lines = clean.rejects.column("line").to_pylist()
    assert len(lines) == dataset.rejects
    assert set(dataset.stats.malformed_lines) <= set(lines)
    messages = clean.rejects.column("message").to_pylist()
    assert all(messages), "every reject says why"


def test_transient_item_errors_succeed_on_the_in_place_retry(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job(handler="flaky")
    summary = job.run()

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    assert summary["attempts"] == summary["tasks"]["total"]  # no task had to be re-run


@pytest.mark.parametrize("isolation", [False, True], ids=["in-process", "isolated"])
def test_a_hung_item_times_out_and_only_that_item_fails(
    fault_job: JobFactory, clean: JobOutput, isolation: bool
) -> None:
    job = fault_job(
        handler="hang",
        config={
            "worker": {"item_timeout": "1s", "isolation": isolation},
            "retry": {"item_attempts": 2},
        },
    )
    summary = job.run(timeout=90)

    assert summary["status"] == "SUCCEEDED"
    out = job.check()
    assert_same_except(out, clean, {HANG_ID})
    record = failure(out, HANG_ID)
    assert record["exception"] == "ItemTimeout"
    assert "took longer than 1s" in str(record["message"])
    assert summary["attempts"] == summary["tasks"]["total"]  # the attempt itself went on


def test_a_segfault_with_isolation_fails_only_its_item(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job(handler="segfault", config={"worker": {"isolation": True}})
    summary = job.run()

    assert summary["status"] == "SUCCEEDED"
    out = job.check()
    assert_same_except(out, clean, {SEGV_ID})
    record = failure(out, SEGV_ID)
    assert record["error_class"] == "infrastructure"
    assert record["exception"] == "HandlerCrashed"
    assert summary["attempts"] == summary["tasks"]["total"]


def test_a_segfault_without_isolation_spends_the_attempts_and_fails_every_item_of_its_task(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job(handler="segfault", config={"retry": {"max_attempts": 2}})
    summary = job.run(timeout=90)

    # 400 of ~8000 items failed: within the tolerated 10%
    assert summary["status"] == "SUCCEEDED"
    out = job.check()  # I1: every item of the dead task is a failure record
    (dead,) = [t for t in job.tasks() if t.status is TaskStatus.FAILED]
    assert dead.attempt >= 2  # (exactly 2 is test_worker_crashes' poison-task test)
    of_dead = pc.equal(out.failures.column("task_id"), pa.scalar(dead.task_id))
    lost = {str(k) for k in out.failures.filter(of_dead).column("key").to_pylist()}
    assert SEGV_ID in lost
    assert len(lost) == dead.items_total
    assert_same_except(out, clean, lost)
    assert all(
        f"task failed after {dead.attempt} attempts" in str(failure(out, key)["message"])
        for key in lost
    )


def test_a_result_corrupted_after_its_checksum_is_caught_and_its_task_rerun(
    fault_job: JobFactory, clean: JobOutput
) -> None:
    job = fault_job()
    summary = job.run(env=job.env("after_result_write:1:corrupt", once=True))

    assert summary["status"] == "SUCCEEDED"
    assert_same_output(job.check(), clean)
    (task_id,) = [t.task_id for t in job.tasks() if t.attempt > 1]
    task = job.task(task_id)
    # verification before the merge reopened the task; attempt 2's result was merged
    assert task.result_attempt == task.attempt == 2
    assert "failed verification" in job.tail(50_000)
