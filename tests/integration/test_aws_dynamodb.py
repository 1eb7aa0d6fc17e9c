"""DynamoDbStateStore against an in-process moto server: fencing, the own-write check,
bulk registration, counters under concurrency, throttling, and the lifecycle functions
of statestore/base.py running over it."""

from __future__ import annotations

import dataclasses
import multiprocessing
import queue as stdlib_queue
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from shardflow.aws import AwsSettings, dynamodb_client
from shardflow.errors import ConfigError, ConflictError, StoreError
from shardflow.models import Job, Task, TaskStatus
from shardflow.statestore.base import (
    StateStore,
    commit_task,
    lease_task,
    renew_lease,
    status_counter,
)
from shardflow.statestore.dynamodb import DynamoDbStateStore, open_dynamodb_state
from shardflow.statestore.dynamodb_schema import table_problems

pytest_plugins = ["tests.plugins.moto"]
pytestmark = pytest.mark.aws

JOB = "job-a"
PENDING = status_counter(TaskStatus.PENDING)
LEASED = status_counter(TaskStatus.LEASED)
SUCCEEDED = status_counter(TaskStatus.SUCCEEDED)


@pytest.fixture
def store(dynamodb_table: str, aws_settings: AwsSettings) -> Iterator[DynamoDbStateStore]:
    store = DynamoDbStateStore(dynamodb_table, settings=aws_settings)
    yield store
    store.close()


def tasks(count: int, job_id: str = JOB, start: int = 0) -> list[Task]:
    return [
        Task(job_id=job_id, task_id=f"t{i:06d}", batch_id=f"b{i:06d}")
        for i in range(start, start + count)
    ]


def commit(store: StateStore, task: Task, now: float) -> Task:
    return commit_task(
        store,
        task,
        now=now,
        result_attempt=task.attempt,
        items_total=3,
        items_succeeded=2,
        items_failed=1,
        items_rejected=0,
        rows=2,
    )


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def lose_first_response(sent: list[int]) -> Any:
    """A before-send hook that delivers the first request for real, then pretends the
    response was lost (a 500), so botocore sends the same request again."""

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(1)
        if len(sent) > 1:
            return None
        forward = urllib.request.Request(  # noqa: S310 (the moto server's http URL)
            request.url, data=request.body, headers=dict(request.headers), method=request.method
        )
        with urllib.request.urlopen(forward, timeout=30) as response:  # noqa: S310
            assert response.status == 200
        return AWSResponse(
            request.url, 500, HTTPHeaders(), _Body(b'{"__type":"InternalServerError"}')
        )

    return hook


def reply(status: int, body: bytes, times: int, sent: list[int]) -> Any:
    """A before-send hook answering ``status``/``body`` to the first ``times`` requests."""

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(1)
        if len(sent) <= times:
            return AWSResponse(request.url, status, HTTPHeaders(), _Body(body))
        return None

    return hook


def test_table_has_the_documented_design(dynamodb_table: str, aws_settings: AwsSettings) -> None:
    client = dynamodb_client(aws_settings)
    description = client.describe_table(TableName=dynamodb_table)["Table"]
    assert table_problems(description) == []
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    client.close()


def test_url_reopens_the_same_table(store: DynamoDbStateStore) -> None:
    store.create_job(Job(job_id=JOB, name="n"))
    reopened = open_dynamodb_state(store.url)
    assert reopened.get_job(JOB) == Job(job_id=JOB, name="n")
    reopened.close()


@pytest.mark.parametrize(
    "url", ["dynamodb://", "dynamodb://a", "dynamodb://t?colour=red", "sqlite:///x.db"]
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_dynamodb_state(url)


def test_lease_heartbeat_commit_over_dynamodb(store: DynamoDbStateStore) -> None:
    assert store.register_tasks(tasks(2)) == 2
    leased = lease_task(store, JOB, "t000000", owner="w1", ttl=30, now=100.0)
    assert leased is not None
    assert lease_task(store, JOB, "t000000", owner="w2", ttl=30, now=110.0) is None
    beat = renew_lease(store, leased, ttl=30, now=120.0)
    # the first holder's lease expired: w2 takes over, and w1's version is now stale
    taken = lease_task(store, JOB, "t000000", owner="w2", ttl=30, now=200.0)
    assert taken is not None
    assert taken.version == beat.version + 1
    with pytest.raises(ConflictError, match="current version is 3"):
        commit(store, beat, now=201.0)
    done = commit(store, taken, now=202.0)
    assert (done.status, done.lease_owner, done.version) == (TaskStatus.SUCCEEDED, None, 4)
    assert store.list_tasks(JOB, TaskStatus.SUCCEEDED) == [done]
    assert store.list_tasks(JOB, TaskStatus.PENDING) == tasks(2)[1:]
    assert store.read_counters(JOB) == {
        PENDING: 1,
        SUCCEEDED: 1,
        "attempts": 2,
        "items.succeeded": 2,
        "items.failed": 1,
        "rows": 2,
    }


@pytest.mark.parametrize("counted", [True, False], ids=["transaction", "single-update"])
def test_own_write_that_landed_before_a_lost_response_is_success(
    store: DynamoDbStateStore, counted: bool
) -> None:
    (task,) = tasks(1)
    store.register_tasks([task])
    leased = dataclasses.replace(task, status=TaskStatus.LEASED, lease_owner="w1", attempt=1)
    counters = {PENDING: -1, LEASED: 1} if counted else {}
    operation = "TransactWriteItems" if counted else "UpdateItem"
    sent: list[int] = []
    store.client.meta.events.register(
        f"before-send.dynamodb.{operation}", lose_first_response(sent)
    )
    stored = store.cas_task(leased, 0, counters)
    assert len(sent) == 2  # the retry found our write and was not taken for a conflict
    assert stored == dataclasses.replace(leased, version=1)
    assert store.get_task(JOB, task.task_id) == stored
    assert store.read_counters(JOB) == ({LEASED: 1} if counted else {PENDING: 1})
    # someone else's write is still a conflict
    with pytest.raises(ConflictError):
        store.cas_task(dataclasses.replace(leased, lease_owner="w2"), 0, counters)


def test_register_thousands_of_tasks_in_batches_and_idempotently(
    store: DynamoDbStateStore,
) -> None:
    # 2,500 tasks are 100 BatchWriteItem calls of 25: many batches and a partial last
    # one, in the few seconds moto (answering one request at a time) needs for them
    started = time.monotonic()
    assert store.register_tasks(tasks(2_500)) == 2_500
    elapsed = time.monotonic() - started
    print(f"\nregistered 2,500 tasks on moto in {elapsed:.1f} s")
    assert elapsed < 30
    assert store.register_tasks(tasks(10, start=2_495)) == 5
    assert store.read_counters(JOB) == {PENDING: 2_505}
    page = store.list_tasks(JOB, TaskStatus.PENDING, after="t002490", limit=5)
    assert [t.task_id for t in page] == [f"t{i:06d}" for i in range(2_491, 2_496)]


def test_registration_that_died_midway_is_counted_exactly_by_the_next(
    store: DynamoDbStateStore,
) -> None:
    def die(**kwargs: Any) -> None:
        if "REMOVE" in kwargs["params"].get("UpdateExpression", ""):
            raise ConnectionResetError("injected: died before closing the ledger")

    store.client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", die)
    with pytest.raises(ConnectionResetError):
        store.register_tasks(tasks(300))
    store.client.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", die)
    assert store.read_counters(JOB) == {}  # written but not yet counted
    assert len(store.list_tasks(JOB)) == 300
    # the re-run finds every task there, counts the dead run's ledger, and no more
    assert store.register_tasks(tasks(400)) == 100
    assert store.read_counters(JOB) == {PENDING: 400}


def test_counters_stay_exact_under_four_committing_threads(store: DynamoDbStateStore) -> None:
    store.register_tasks(tasks(40))
    errors: list[BaseException] = []

    def worker(owner: str) -> None:
        try:
            for task in tasks(40):
                leased = lease_task(store, JOB, task.task_id, owner=owner, ttl=600, now=10.0)
                if leased is not None:
                    commit(store, leased, now=11.0)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert store.read_counters(JOB) == {
        SUCCEEDED: 40,
        "attempts": 40,
        "items.succeeded": 80,
        "items.failed": 40,
        "rows": 80,
    }


def race_to_lease(url: str, owner: str, barrier: Any, results: Any) -> None:
    """Spawned: lease every task it can, in order, once all racers are ready."""
    store = open_dynamodb_state(url)
    barrier.wait()
    won = [
        t.task_id
        for t in tasks(40)
        if lease_task(store, JOB, t.task_id, owner=owner, ttl=600, now=5.0)
    ]
    results.put((owner, won))
    store.close()


def test_processes_racing_for_leases_win_each_task_once(store: DynamoDbStateStore) -> None:
    store.register_tasks(tasks(40))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4, timeout=60), ctx.Queue()
    procs = [
        ctx.Process(target=race_to_lease, args=(store.url, f"w{i}", barrier, results))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    won: list[str] = []
    deadline = time.monotonic() + 120
    reported = 0
    while reported < len(procs):
        try:
            won.extend(results.get(timeout=0.2)[1])
            reported += 1
        except stdlib_queue.Empty:
            assert all(p.exitcode in (None, 0) for p in procs), "a racer died"
            assert time.monotonic() < deadline, "racers stalled"
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert sorted(won) == [t.task_id for t in tasks(40)]
    assert store.read_counters(JOB) == {LEASED: 40, "attempts": 40}


def test_throttling_is_retried_by_botocore(store: DynamoDbStateStore) -> None:
    store.create_job(Job(job_id=JOB, name="n"))
    sent: list[int] = []
    throttled = (
        b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}'
    )
    store.client.meta.events.register(
        "before-send.dynamodb.GetItem", reply(400, throttled, 2, sent)
    )
    assert store.get_job(JOB) is not None
    assert len(sent) == 3


def test_transaction_conflicts_are_retried_with_backoff(store: DynamoDbStateStore) -> None:
    (task,) = tasks(1)
    store.register_tasks([task])
    sent: list[int] = []
    cancelled = (
        b'{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",'
        b'"Message":"Transaction cancelled","CancellationReasons":'
        b'[{"Code":"TransactionConflict"},{"Code":"None"}]}'
    )
    store.client.meta.events.register(
        "before-send.dynamodb.TransactWriteItems", reply(400, cancelled, 3, sent)
    )
    stored = store.cas_task(dataclasses.replace(task, attempt=1), 0, {"attempts": 1})
    assert stored.version == 1
    assert len(sent) == 4
    assert store.read_counters(JOB) == {PENDING: 1, "attempts": 1}


def test_transaction_that_keeps_conflicting_fails_after_bounded_tries(
    store: DynamoDbStateStore,
) -> None:
    (task,) = tasks(1)
    store.register_tasks([task])
    sent: list[int] = []
    cancelled = (
        b'{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",'
        b'"CancellationReasons":[{"Code":"TransactionConflict"},{"Code":"None"}]}'
    )
    store.client.meta.events.register(
        "before-send.dynamodb.TransactWriteItems", reply(400, cancelled, 99, sent)
    )
    with pytest.raises(StoreError, match="TransactionConflict"):
        store.cas_task(dataclasses.replace(task, attempt=1), 0, {"attempts": 1})
    assert len(sent) == 8
    assert store.get_task(JOB, task.task_id) == task


def test_items_planted_in_another_jobs_index_partitions_are_not_listed(
    store: DynamoDbStateStore,
) -> None:
    from shardflow.statestore.codec import encode_model

    store.create_job(Job(job_id=JOB, name="victim"))
    store.register_tasks(tasks(2))
    # a worker of job-evil may write items in its own partition, index keys included
    fake_task = Task(job_id=JOB, task_id="t999999", batch_id="b999999")
    fake_job = Job(job_id="job-fake", name="planted")
    planted = [
        {
            "PK": {"S": "JOB#job-evil"},
            "SK": {"S": "TASK#t999999"},
            "GSI1PK": {"S": f"JOB#{JOB}#S#PENDING"},
            "GSI1SK": {"S": "t999999"},
            "body": {"S": encode_model(fake_task).decode()},
        },
        {
            "PK": {"S": "JOB#job-evil"},
            "SK": {"S": "FAKEJOB"},
            "GSI2PK": {"S": "JOBS"},
            "GSI2SK": {"S": f"{time.time():017.6f}#job-fake"},
            "body": {"S": encode_model(fake_job).decode()},
        },
    ]
    for item in planted:
        store.client.put_item(TableName=store.table, Item=item)
    listed = store.list_tasks(JOB, TaskStatus.PENDING)
    assert [t.task_id for t in listed] == ["t000000", "t000001"]
    assert [j.job_id for j in store.list_jobs()] == [JOB]
