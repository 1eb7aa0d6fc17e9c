"""The streaming aggregation on the memory adapters: results merged in task order as they
commit, schema drift resolved (declared types, promotion, a full pass when a result does
not fit, a clear failure when types cannot be unified), a corrupt result reopened, a task
changed after it was merged, and what the output manifest says."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.aggregate.run import AggregateSpec, Aggregation
from shardflow.errors import CorruptResultError, SchemaDriftError, TasksNotFinalError
from shardflow.layout import Layout
from shardflow.manifests import ResultMarker, TaskManifest, encode_manifest
from shardflow.models import Batch, ErrorClass, Job, Task, TaskStatus
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.split.spec import SplitSpec
from shardflow.statestore.base import commit_task, fail_task, lease_task, transition_task
from shardflow.statestore.memory import MemoryStateStore
from shardflow.worker.results import ipc_bytes

JOB = "job-1"
LAYOUT = Layout(JOB)


class Stores:
    def __init__(self, tasks: int) -> None:
        self.state = MemoryStateStore()
        self.store = MemoryObjectStore()
        self.state.create_job(Job(job_id=JOB, name="agg"))
        self.state.register_tasks(
            [Task(JOB, f"t{n:06d}", f"b{n:06d}", items_total=2) for n in range(tasks)]
        )

    def commit(self, n: int, table: pa.Table) -> None:
        """Lease task ``n`` and commit ``table`` as its result, as a worker would."""
        task_id = f"t{n:06d}"
        task = lease_task(self.state, JOB, task_id, owner="w", ttl=60, now=1.0)
        assert task is not None
        key = LAYOUT.result(task_id, task.attempt)
        put = self.store.put_bytes(key, ipc_bytes(table, None))
        marker = ResultMarker(
            job_id=JOB, task_id=task_id, attempt=task.attempt, owner="w", created_at=1.0,
            result_key=key, result_sha256=put.sha256, result_size=put.size,
            rows=table.num_rows, failures_key=None, failures_sha256=None, failures_size=0,
            items_total=table.num_rows, items_succeeded=table.num_rows, items_failed=0,
            items_rejected=0, columns=tuple(table.column_names),
        )  # fmt: skip
        self.store.put_bytes(LAYOUT.marker(task_id), encode_manifest(marker))
        commit_task(
            self.state, task, now=2.0, result_attempt=task.attempt, items_total=table.num_rows,
            items_succeeded=table.num_rows, items_failed=0, items_rejected=0, rows=table.num_rows,
        )  # fmt: skip

    def fail(self, n: int) -> None:
        task = lease_task(self.state, JOB, f"t{n:06d}", owner="w", ttl=60, now=1.0)
        assert task is not None
        fail_task(self.state, task, now=2.0, error_class=ErrorClass.PERMANENT, message="bad")

    def aggregation(self, tmp_path: Path, **spec: Any) -> Aggregation:
        return Aggregation(
            job_id=JOB,
            state=self.state,
            store=self.store,
            spec=AggregateSpec(**spec),
            split=SplitSpec(paths=("in.jsonl",), format="jsonl"),
            scratch=tmp_path / "scratch",
            now=lambda: 3.0,
        )

    def output(self) -> pa.Table:
        return pq.read_table(io.BytesIO(self.store.get_bytes(LAYOUT.output("results", "parquet"))))


def rows(n: int, **columns: list[Any]) -> pa.Table:
    return pa.table({"_key": [f"b{n:06d}:{i}" for i in range(2)], **columns})


def test_results_stream_in_task_order_as_they_commit(tmp_path: Path) -> None:
    s = Stores(3)
    agg = s.aggregation(tmp_path)
    s.commit(1, rows(1, x=[3, 4]))
    assert agg.advance() == 0  # t000000 is not final yet: nothing can go before it
    s.commit(0, rows(0, x=[1, 2]))
    assert agg.advance() == 2
    s.commit(2, rows(2, x=[5, 6]))
    manifest = agg.finish()
    out = s.output()
    assert out.column("x").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert out.column("_key").to_pylist()[0] == "b000000:0"
    assert (manifest.rows, manifest.items_total, manifest.failures) == (6, 6, 0)
    assert manifest.schema == (("_key", "string"), ("x", "int64"))
    assert s.store.get_bytes(LAYOUT.output_success()) == b""


def test_a_result_that_does_not_fit_makes_a_full_pass_and_no_column_is_dropped(
    tmp_path: Path,
) -> None:
    s = Stores(3)
    agg = s.aggregation(tmp_path)
    s.commit(0, rows(0, x=[1, 2]))
    s.commit(1, rows(1, x=[3, 4], extra=["a", None]))  # a column the others lack
    s.commit(2, rows(2, x=[0.5, 1.5]))  # x is a double here: promoted
    agg.finish()
    out = s.output()
    assert out.schema.names == ["_key", "x", "extra"]
    assert out.schema.field("x").type == pa.float64()
    assert out.column("x").to_pylist() == [1, 2, 3, 4, 0.5, 1.5]
    assert out.column("extra").to_pylist() == [None, None, "a", None, None, None]


def test_a_declared_type_is_the_output_s_type(tmp_path: Path) -> None:
    s = Stores(3)
    s.commit(0, rows(0, x=[1, 2], y=[1, 2]))
    s.commit(1, rows(1, x=[None, None], y=["3", "4"]))  # a null column takes any type
    s.commit(2, rows(2, x=[5, 6], y=[5, 6]))
    s.aggregation(tmp_path, declared_schema={"x": "double", "y": "string"}).finish()
    out = s.output()
    assert (out.schema.field("x").type, out.schema.field("y").type) == (pa.float64(), pa.string())
    assert out.column("y").to_pylist() == ["1", "2", "3", "4", "5", "6"]


def test_a_value_that_cannot_take_the_declared_type_fails_clearly(tmp_path: Path) -> None:
    s = Stores(1)
    s.commit(0, rows(0, y=["1", "many"]))
    with pytest.raises(SchemaDriftError, match=r"column 'y'.*int64"):
        s.aggregation(tmp_path, declared_schema={"y": "int64"}).finish()


def test_types_that_cannot_be_unified_fail_with_the_column_and_the_fix(tmp_path: Path) -> None:
    s = Stores(2)
    s.commit(0, rows(0, x=[1, 2]))
    s.commit(1, rows(1, x=["a", "b"]))
    with pytest.raises(SchemaDriftError, match=r"column 'x'.*output\.schema"):
        s.aggregation(tmp_path).finish()
    assert s.store.head(LAYOUT.output_success()) is None


def test_a_corrupt_result_is_reopened_and_the_walk_waits_for_it(tmp_path: Path) -> None:
    s = Stores(2)
    s.commit(0, rows(0, x=[1, 2]))
    s.commit(1, rows(1, x=[3, 4]))
    s.store.corrupt(LAYOUT.result("t000000", 1), b"ARROW1 not a result")
    agg = s.aggregation(tmp_path)
    assert agg.advance() == 0
    task = s.state.get_task(JOB, "t000000")
    assert task is not None
    assert task.status is TaskStatus.PENDING
    assert s.store.head(LAYOUT.marker("t000000")) is None  # its marker is gone
    assert s.state.read_counters(JOB)["rows"] == 2  # its rows were taken back
    with pytest.raises(CorruptResultError, match="t000000"):
        agg.finish()  # the caller is told once: the map phase runs the task again
    with pytest.raises(TasksNotFinalError):
        agg.finish()
    s.commit(0, rows(0, x=[1, 2]))
    agg.finish()
    assert s.output().column("x").to_pylist() == [1, 2, 3, 4]


def test_a_failed_task_retried_after_it_was_merged_is_merged_again(tmp_path: Path) -> None:
    s = Stores(3)
    s.commit(0, rows(0, x=[1, 2]))
    s.fail(1)
    s.commit(2, rows(2, x=[5, 6]))
    agg = s.aggregation(tmp_path)
    assert agg.advance() == 3
    # `shardflow retry`: the failed task runs again and commits
    failed = s.state.get_task(JOB, "t000001")
    assert failed is not None
    transition_task(s.state, failed, TaskStatus.PENDING, now=3.0, attempt_floor=failed.attempt)
    s.commit(1, rows(1, x=[3, 4]))
    manifest = agg.finish()
    assert s.output().column("x").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert manifest.failures == 0


def test_a_wholly_failed_task_s_items_are_failure_records(tmp_path: Path) -> None:
    s = Stores(2)
    s.commit(0, rows(0, x=[1, 2]))
    s.fail(1)
    batches = tuple(
        Batch(f"b{n:06d}", "file:///in.jsonl", "jsonl", 2, 1 + 2 * n, 2 * n) for n in range(2)
    )
    s.store.put_bytes(LAYOUT.task_part(0), encode_manifest(TaskManifest(JOB, 0, batches)))
    manifest = s.aggregation(tmp_path).finish()
    failures = pq.read_table(io.BytesIO(s.store.get_bytes(LAYOUT.output("failures", "parquet"))))
    assert failures.column("key").to_pylist() == ["b000001:0", "b000001:1"]
    assert set(failures.column("error_class").to_pylist()) == {"permanent"}
    assert (manifest.rows, manifest.failures, manifest.items_total) == (2, 2, 4)
