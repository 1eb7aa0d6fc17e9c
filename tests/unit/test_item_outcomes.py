"""What happens to items in the one item loop (:meth:`ItemRunner.run_chunk`): their rows, an
in-place retry of a transient error (the sleep is injected), a failure record with the
secret fields masked, a failing batch re-run one record at a time so only the bad item
fails, rejects, and a chunk that stops for a checkpoint or a stop without losing a record.

The loop is the same with and without ``worker.item_timeout``; tests that could tell the
two apart run both ways."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from shardflow import batch_handler
from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import ClassRule, TransientError
from shardflow.models import Batch, ErrorClass
from shardflow.split.spec import Record
from shardflow.worker.context import TaskContext
from shardflow.worker.handler import adapt_handler
from shardflow.worker.items import CHECKPOINT, DONE, STOP, Chunk, ItemRunner

BATCH = Batch(
    batch_id="b000001",
    source="file:///data/users.jsonl",
    format="jsonl",
    records=3,
    first_line=1,
    first_ordinal=0,
)
TIMEOUTS = pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])


def _ctx() -> TaskContext:
    return TaskContext("job-1", "t000001", "b000001", 2, "slot-0", logging.getLogger("t"))


def _runner(
    fn: Any,
    *,
    sleeps: list[float],
    item_attempts: int = 3,
    timeout: float | None = None,
    rules: tuple[ClassRule, ...] = (),
    id_field: str | None = None,
    check_every: int = 20_000,
) -> ItemRunner:
    runner = ItemRunner(
        handler=adapt_handler(fn, "h"),
        policy=RetryPolicy(item_attempts=item_attempts),
        rules=rules,
        sleep=sleeps.append,
        item_timeout=timeout,
        secret_fields=("token",),
        id_field=id_field,
        check_every=check_every,
    )
    runner.start("t000001", 2, BATCH)
    return runner


def _records(values: Sequence[dict[str, Any] | None]) -> list[Record]:
    return [
        Record(n, n + 1, v, None if v is not None else "bad JSON", None if v else "{oops")
        for n, v in enumerate(values)
    ]


def _run(
    runner: ItemRunner,
    values: Sequence[dict[str, Any] | None],
    due: Callable[[int], str | None] = lambda count: None,
) -> Chunk:
    chunk = Chunk()
    assert runner.run_chunk(iter(_records(values)), chunk, _ctx(), due) == DONE
    return chunk


@TIMEOUTS
def test_outputs_become_rows_keyed_by_their_item(timeout: float | None) -> None:
    outputs: dict[int, Any] = {1: {"a": 1}, 2: [{"a": 2}, {"a": 3}], 3: None}
    runner = _runner(lambda record, ctx: outputs[record["n"]], sleeps=[], timeout=timeout)
    chunk = _run(runner, [{"n": 1}, {"n": 2}, {"n": 3}])
    assert chunk.rows == [{"a": 1}, {"a": 2}, {"a": 3}]
    assert chunk.keys == ["b000001:0", "b000001:1", "b000001:1"]
    assert (chunk.succeeded, chunk.failed, chunk.last) == (3, 0, 2)


def test_the_id_field_is_the_item_key_and_a_record_without_it_is_rejected() -> None:
    runner = _runner(lambda record, ctx: {"x": 1}, sleeps=[], id_field="id")
    chunk = _run(runner, [{"id": "u1"}, {"other": 1}, {"id": 7}])
    assert chunk.keys == ["u1", "7"]
    assert (chunk.succeeded, chunk.rejected) == (2, 1)
    (reject,) = chunk.failures
    assert (reject["kind"], reject["line"], reject["key"]) == ("rejected", 2, None)
    assert reject["message"] == "missing id field 'id'"


@TIMEOUTS
def test_a_transient_error_is_retried_in_place_with_backoff(timeout: float | None) -> None:
    calls: list[int] = []

    def flaky(record: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("503 from the API")
        return {"ok": True}

    sleeps: list[float] = []
    chunk = _run(_runner(flaky, sleeps=sleeps, timeout=timeout), [{}])
    assert chunk.rows == [{"ok": True}]
    assert (chunk.succeeded, chunk.failed, len(calls)) == (1, 0, 3)
    assert len(sleeps) == 2
    assert all(0 < s <= 1.0 for s in sleeps)


@TIMEOUTS
def test_a_transient_error_that_outlasts_the_item_attempts_fails_the_item(
    timeout: float | None,
) -> None:
    def down(record: dict[str, Any], ctx: TaskContext) -> None:
        raise TransientError("still down")

    sleeps: list[float] = []
    runner = _runner(down, sleeps=sleeps, item_attempts=2, timeout=timeout)
    chunk = _run(runner, [{}] * 8)
    assert (chunk.succeeded, chunk.failed) == (0, 8)
    assert len(sleeps) == 8  # one retry per item
    record = chunk.failures[7]
    assert record["error_class"] == "transient"
    assert (record["line"], record["key"], record["attempt"]) == (8, "b000001:7", 2)


def test_a_failure_record_names_the_error_and_masks_the_records_secrets() -> None:
    def leak(record: dict[str, Any], ctx: TaskContext) -> None:
        raise ValueError(f"rejected token {record['token']} for {record['id']}")

    chunk = _run(_runner(leak, sleeps=[]), [{"id": "u1", "token": "s3cr3t-value-123"}])
    (record,) = chunk.failures
    assert record["kind"] == "failed"
    assert record["error_class"] == "permanent"
    assert record["exception"] == "ValueError"
    assert (record["source"], record["task_id"]) == (BATCH.source, "t000001")
    assert "u1" in record["message"]
    assert "s3cr3t-value-123" not in record["message"]
    assert "s3cr3t-value-123" not in record["traceback"]
    assert "ValueError" in record["traceback"]


@TIMEOUTS
def test_an_output_of_the_wrong_type_fails_the_item_as_permanent(timeout: float | None) -> None:
    runner = _runner(lambda record, ctx: "text", sleeps=[], timeout=timeout)
    chunk = _run(runner, [{}, {}])
    assert (chunk.succeeded, chunk.failed) == (0, 2)
    assert chunk.failures[0]["error_class"] == "permanent"
    assert chunk.failures[0]["exception"] == "TypeError"
    assert "not str" in chunk.failures[0]["message"]


@TIMEOUTS
def test_a_wrong_output_follows_the_rules_like_a_raised_error(timeout: float | None) -> None:
    # a rule making TypeError transient: the bad output is retried in place and ends as
    # transient, with the item timeout or without it (the two used to disagree)
    rules = (ClassRule(ErrorClass.TRANSIENT, exceptions=("TypeError",)),)
    sleeps: list[float] = []
    runner = _runner(
        lambda record, ctx: 42, sleeps=sleeps, timeout=timeout, rules=rules, item_attempts=3
    )
    chunk = _run(runner, [{}])
    assert (chunk.succeeded, chunk.failed, len(sleeps)) == (0, 1, 2)
    assert chunk.failures[0]["error_class"] == "transient"


def test_a_list_output_is_checked_before_it_is_kept() -> None:
    outputs = iter([[{"a": 1}], [{"a": 2}, 3]])
    runner = _runner(lambda record, ctx: next(outputs), sleeps=[])
    chunk = _run(runner, [{}, {}])
    assert (chunk.rows, chunk.keys) == ([{"a": 1}], ["b000001:0"])
    assert (chunk.succeeded, chunk.failed) == (1, 1)
    assert chunk.failures[0]["line"] == 2


def test_a_failing_batch_is_rerun_one_record_at_a_time() -> None:
    seen: list[int] = []

    @batch_handler
    def enrich(records: list[dict[str, Any]], ctx: TaskContext) -> list[dict[str, Any]]:
        seen.append(len(records))
        if any(r["n"] == 2 for r in records):
            raise ValueError("n=2 is not allowed")
        return [{"n": r["n"] * 10} for r in records]

    chunk = _run(_runner(enrich, sleeps=[]), [{"n": i} for i in range(4)])
    assert seen == [4, 1, 1, 1, 1]
    assert chunk.rows == [{"n": 0}, {"n": 10}, {"n": 30}]
    assert chunk.keys == ["b000001:0", "b000001:1", "b000001:3"]
    assert [f["key"] for f in chunk.failures] == ["b000001:2"]
    assert (chunk.succeeded, chunk.failed) == (3, 1)


def test_a_batch_that_succeeds_keeps_one_output_per_record() -> None:
    runner = _runner(batch_handler(lambda records, ctx: [None, {"x": 1}]), sleeps=[])
    chunk = _run(runner, [{}, {}])
    assert (chunk.rows, chunk.keys, chunk.succeeded) == ([{"x": 1}], ["b000001:1"], 2)


def test_a_malformed_record_is_a_reject_with_its_line() -> None:
    chunk = _run(_runner(lambda record, ctx: record, sleeps=[]), [{"a": 1}, None])
    (record,) = chunk.failures
    assert record["key"] is None
    assert (record["kind"], record["line"], record["error_class"]) == ("rejected", 2, "rejected")
    assert record["message"] == "bad JSON: {oops"
    assert (chunk.succeeded, chunk.rejected, chunk.last) == (1, 1, 1)


@pytest.mark.parametrize("reason", [CHECKPOINT, STOP])
@pytest.mark.parametrize("per_batch", [False, True], ids=["per-item", "per-batch"])
def test_a_chunk_ends_when_due_and_the_next_one_takes_the_rest(
    reason: str, per_batch: bool
) -> None:
    fn: Any = lambda record, ctx: {"n": record["n"]}  # noqa: E731
    if per_batch:
        fn = batch_handler(lambda records, ctx: [{"n": r["n"]} for r in records])
    asked: list[int] = []

    def due(count: int) -> str | None:
        asked.append(count)
        return reason if count == 16 else None

    runner = _runner(fn, sleeps=[], check_every=16)  # asked every 16 items
    records = iter(_records([{"n": i} for i in range(40)]))
    first = Chunk()
    assert runner.run_chunk(records, first, _ctx(), due) == reason
    # every record taken from the batch is in the chunk: the handler ran on all 16
    assert ([r["n"] for r in first.rows], first.last, first.succeeded) == (list(range(16)), 15, 16)
    rest = Chunk(first.last)
    assert runner.run_chunk(records, rest, _ctx(), lambda count: None) == DONE
    assert [r["n"] for r in rest.rows] == list(range(16, 40))
    assert (rest.last, asked) == (39, [16])
