"""The worker's commit path in pieces: lazy checkpoints, results from memory, deliveries
that cannot lease their task yet, and the output's row groups."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.aggregate.finalize import ParquetSink
from shardflow.models import ErrorClass, Job, Task, TaskStatus
from shardflow.queue.memory import MemoryQueue
from shardflow.statestore.base import commit_task, lease_task, lease_wait, retry_later
from shardflow.statestore.memory import MemoryStateStore
from shardflow.worker.checkpoint import Checkpoint
from shardflow.worker.results import decode_table, ipc_bytes, result_table
from shardflow.worker.slot import set_aside

JOB = "job-1"
TASK = "t000001"


def _rows(start: int, n: int) -> tuple[list[dict[str, object]], list[str]]:
    rows = [{"n": i, "key": "handler's own"} for i in range(start, start + n)]
    return rows, [f"b1:{i}" for i in range(start, start + n)]


def test_an_attempt_that_never_saves_writes_no_checkpoint(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "t1", 1)
    assert ckpt.part_paths() == []
    assert ckpt.failure_records() == []
    ckpt.close()
    assert not (ckpt.dir / "checkpoint.db").exists()
    # a later attempt finds nothing to resume
    assert Checkpoint(tmp_path / "t1", 2).progress.chunks == 0


def test_a_saved_chunk_is_resumed_by_the_next_attempt_and_the_tail_joins_it(
    tmp_path: Path,
) -> None:
    first = Checkpoint(tmp_path / "t1", 1)
    rows, keys = _rows(0, 3)
    first.save(
        last_ordinal=2,
        rows=rows,
        keys=keys,
        key_column="key",
        failures=[{"key": "b1:9", "kind": "failed"}],
        succeeded=3,
        failed=1,
        rejected=0,
    )
    first.close()  # the worker dies here

    second = Checkpoint(tmp_path / "t1", 2)
    assert (second.progress.last_ordinal, second.progress.succeeded) == (2, 3)
    assert second.failure_records() == [{"key": "b1:9", "kind": "failed"}]
    tail_rows, tail_keys = _rows(3, 2)
    result = result_table(second.part_paths(), tail_rows, tail_keys, "key")

    for codec in (None, "lz4"):
        table = decode_table(ipc_bytes(result, codec))
        assert table.column_names[0] == "key"
        assert table.column("key").to_pylist() == [f"b1:{i}" for i in range(5)]
        assert table.column("n").to_pylist() == list(range(5))


def test_a_result_with_no_rows_still_names_the_key_column() -> None:
    table = decode_table(ipc_bytes(result_table([], [], [], "key")))
    assert (table.column_names, table.num_rows) == (["key"], 0)


@pytest.fixture
def state() -> MemoryStateStore:
    store = MemoryStateStore()
    store.create_job(Job(job_id=JOB, name="unit"))
    store.register_tasks([Task(job_id=JOB, task_id=TASK, batch_id="b000001")])
    return store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_delivery_for_a_live_lease_comes_back_when_the_lease_ends(
    state: MemoryStateStore,
) -> None:
    clock = Clock()
    queue = MemoryQueue("tasks", clock=clock)
    queue.send(TASK)
    queue.receive(max_messages=1, visibility_timeout=5)  # the holder's delivery
    held = lease_task(state, JOB, TASK, owner="dead-worker", ttl=30, now=clock.now)
    assert held is not None
    assert lease_wait(held, clock.now + 10) == 20

    clock.now += 10  # the message's own visibility ran out before the lease did
    (message,) = queue.receive(max_messages=1, visibility_timeout=5)
    assert lease_task(state, JOB, TASK, owner="w2", ttl=30, now=clock.now) is None
    set_aside(state, queue, JOB, message.receipt, TASK, clock.now)

    clock.now += 15  # the holder's lease still runs: the message stays hidden
    assert queue.receive(max_messages=1, visibility_timeout=30) == []
    clock.now += 6  # past the lease: the message is back, and the task is taken over
    assert len(queue.receive(max_messages=1, visibility_timeout=30)) == 1
    taken = lease_task(state, JOB, TASK, owner="w2", ttl=30, now=clock.now)
    assert taken is not None
    assert taken.attempt == 2


def test_a_delivery_for_a_final_task_is_deleted(state: MemoryStateStore) -> None:
    clock = Clock()
    queue = MemoryQueue("tasks", clock=clock)
    queue.send(TASK)
    held = lease_task(state, JOB, TASK, owner="w1", ttl=30, now=clock.now)
    assert held is not None
    done = commit_task(
        state,
        held,
        now=clock.now,
        result_attempt=1,
        items_total=1,
        items_succeeded=1,
        items_failed=0,
        items_rejected=0,
        rows=1,
    )
    assert done.status is TaskStatus.SUCCEEDED
    assert lease_wait(done, clock.now) is None

    (message,) = queue.receive(max_messages=1, visibility_timeout=30)
    set_aside(state, queue, JOB, message.receipt, TASK, clock.now)
    clock.now += 3600
    assert queue.depth().total == 0


def test_a_delivery_for_a_backing_off_task_waits_for_its_backoff(
    state: MemoryStateStore,
) -> None:
    held = lease_task(state, JOB, TASK, owner="w1", ttl=30, now=0)
    assert held is not None
    waiting = retry_later(
        state, held, now=10, delay=60, error_class=ErrorClass.TRANSIENT, message="503"
    )
    assert lease_wait(waiting, 40) == 30
    assert lease_wait(waiting, 80) == 0


def test_many_small_inputs_merge_into_few_row_groups(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    schema = pa.schema([("key", pa.string()), ("kind", pa.string())])
    sink = ParquetSink(dest, schema, "zstd", group_rows=1000)
    for n in range(30):
        keys = [f"k{n * 100 + i}" for i in range(100)]
        sink.write(pa.table({"key": keys, "kind": ["a", "b"] * 50}, schema=schema))
    sha = sink.close()

    merged = pq.ParquetFile(dest)
    assert sink.rows == 3000 == merged.metadata.num_rows
    assert merged.metadata.num_row_groups == 3  # not one per input
    assert merged.read().column("key").to_pylist() == [f"k{i}" for i in range(3000)]
    assert sha == hashlib.sha256(dest.read_bytes()).hexdigest()
    # dictionary encoding where values repeat, not for the unique keys
    group = merged.metadata.row_group(0)
    encodings = {group.column(c).path_in_schema: group.column(c).encodings for c in range(2)}
    assert "RLE_DICTIONARY" in encodings["kind"]
    assert "RLE_DICTIONARY" not in encodings["key"]
