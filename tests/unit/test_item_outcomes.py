"""What happens to one item: its rows, an in-place retry of a transient error (the sleep is
injected), a failure record with the secret fields masked, and a failing batch re-run one
record at a time so only the bad item fails."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shardflow import batch_handler
from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import TransientError
from shardflow.models import Batch
from shardflow.worker.context import TaskContext
from shardflow.worker.handler import adapt_handler
from shardflow.worker.items import Chunk, ItemRunner

BATCH = Batch(
    batch_id="b000001",
    source="file:///data/users.jsonl",
    format="jsonl",
    records=3,
    first_line=1,
    first_ordinal=0,
)


def _ctx() -> TaskContext:
    return TaskContext("job-1", "t000001", "b000001", 2, "slot-0", logging.getLogger("t"))


def _runner(
    fn: Any, *, sleeps: list[float], item_attempts: int = 3, timeout: float | None = None
) -> ItemRunner:
    return ItemRunner(
        handler=adapt_handler(fn, "h"),
        policy=RetryPolicy(item_attempts=item_attempts),
        rules=(),
        key_column="_key",
        task_id="t000001",
        attempt=2,
        sleep=sleeps.append,
        item_timeout=timeout,
        secret_fields=("token",),
    )


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_outputs_become_rows_keyed_by_their_item(timeout: float | None) -> None:
    outputs: dict[int, Any] = {1: {"a": 1}, 2: [{"a": 2}, {"a": 3}], 3: None}
    runner = _runner(lambda record, ctx: outputs[record["n"]], sleeps=[], timeout=timeout)
    chunk = Chunk()
    for n in (1, 2, 3):
        runner.run_item(chunk, BATCH, n, f"b1:{n}", {"n": n}, _ctx())
    assert chunk.rows == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert chunk.keys == ["b1:1", "b1:2", "b1:2"]
    assert (chunk.succeeded, chunk.failed) == (3, 0)


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_a_transient_error_is_retried_in_place_with_backoff(timeout: float | None) -> None:
    calls: list[int] = []

    def flaky(record: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("503 from the API")
        return {"ok": True}

    sleeps: list[float] = []
    chunk = Chunk()
    _runner(flaky, sleeps=sleeps, timeout=timeout).run_item(chunk, BATCH, 1, "b1:1", {}, _ctx())
    assert chunk.rows == [{"ok": True}]
    assert (chunk.succeeded, chunk.failed, len(calls)) == (1, 0, 3)
    assert len(sleeps) == 2
    assert all(0 < s <= 1.0 for s in sleeps)


def test_a_transient_error_that_outlasts_the_item_attempts_fails_the_item() -> None:
    def down(record: dict[str, Any], ctx: TaskContext) -> None:
        raise TransientError("still down")

    sleeps: list[float] = []
    chunk = Chunk()
    _runner(down, sleeps=sleeps, item_attempts=2).run_item(chunk, BATCH, 7, "b1:7", {}, _ctx())
    assert (chunk.succeeded, chunk.failed, len(sleeps)) == (0, 1, 1)
    (record,) = chunk.failures
    assert record["error_class"] == "transient"
    assert (record["line"], record["key"], record["attempt"]) == (7, "b1:7", 2)


def test_a_failure_record_names_the_error_and_masks_the_records_secrets() -> None:
    def leak(record: dict[str, Any], ctx: TaskContext) -> None:
        raise ValueError(f"rejected token {record['token']} for {record['id']}")

    chunk = Chunk()
    value = {"id": "u1", "token": "s3cr3t-value-123"}
    _runner(leak, sleeps=[]).run_item(chunk, BATCH, 3, "u1", value, _ctx())
    (record,) = chunk.failures
    assert record["kind"] == "failed"
    assert record["error_class"] == "permanent"
    assert record["exception"] == "ValueError"
    assert record["source"] == BATCH.source
    assert "u1" in record["message"]
    assert "s3cr3t-value-123" not in record["message"]
    assert "s3cr3t-value-123" not in record["traceback"]
    assert "ValueError" in record["traceback"]


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_an_output_of_the_wrong_type_fails_the_item_as_permanent(timeout: float | None) -> None:
    chunk = Chunk()
    _runner(lambda record, ctx: "text", sleeps=[], timeout=timeout).run_item(
        chunk, BATCH, 1, "b1:1", {}, _ctx()
    )
    assert (chunk.succeeded, chunk.failed) == (0, 1)
    assert chunk.failures[0]["error_class"] == "permanent"
    assert "not str" in chunk.failures[0]["message"]


def test_an_unchecked_output_is_checked_before_it_is_kept() -> None:
    runner = _runner(lambda record, ctx: None, sleeps=[])
    chunk = Chunk()
    runner.add_unchecked(chunk, BATCH, 1, "b1:1", [{"a": 1}])
    runner.add_unchecked(chunk, BATCH, 2, "b1:2", 42)
    assert (chunk.rows, chunk.keys) == ([{"a": 1}], ["b1:1"])
    assert (chunk.succeeded, chunk.failed) == (1, 1)
    assert chunk.failures[0]["line"] == 2


def test_a_failing_batch_is_rerun_one_record_at_a_time() -> None:
    @batch_handler
    def enrich(records: list[dict[str, Any]], ctx: TaskContext) -> list[dict[str, Any]]:
        if any(r["n"] == 2 for r in records):
            raise ValueError("n=2 is not allowed")
        return [{"n": r["n"] * 10} for r in records]

    runner = _runner(enrich, sleeps=[])
    pending = [(i, i + 1, f"b1:{i}", {"n": i}) for i in range(4)]
    chunk = Chunk()
    runner.run_pending(chunk, BATCH, pending, _ctx())
    assert pending == []
    assert chunk.rows == [{"n": 0}, {"n": 10}, {"n": 30}]
    assert chunk.keys == ["b1:0", "b1:1", "b1:3"]
    assert [f["key"] for f in chunk.failures] == ["b1:2"]
    assert (chunk.succeeded, chunk.failed) == (3, 1)


def test_a_batch_that_succeeds_keeps_one_output_per_record() -> None:
    runner = _runner(batch_handler(lambda records, ctx: [None, {"x": 1}]), sleeps=[])
    chunk = Chunk()
    runner.run_pending(chunk, BATCH, [(0, 1, "k0", {}), (1, 2, "k1", {})], _ctx())
    runner.run_pending(chunk, BATCH, [], _ctx())  # nothing pending: nothing happens
    assert (chunk.rows, chunk.keys, chunk.succeeded) == ([{"x": 1}], ["k1"], 2)


def test_a_reject_record_has_no_key_and_keeps_the_line() -> None:
    runner = _runner(lambda record, ctx: None, sleeps=[])
    record = runner.reject_record(BATCH, 12, "malformed JSON", '{"id": ')
    assert record["key"] is None
    assert (record["kind"], record["line"]) == ("rejected", 12)
