"""The Queue contract (shardflow.queue.base), run against every case in queue_cases.py."""

from __future__ import annotations

import multiprocessing
import queue as stdlib_queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from shardflow.errors import ConfigError, InvalidIdError
from shardflow.queue.base import Message, Queue
from shardflow.queue.local import SqliteQueue, open_local_queue, sqlite_path
from shardflow.queue.memory import MemoryQueue
from tests.contract.queue_cases import (
    QUEUE_CASES,
    FakeClock,
    QueueCase,
    QueueHarness,
    consume_until_empty,
)


@pytest.fixture(params=[pytest.param(c, id=c.id, marks=c.marks) for c in QUEUE_CASES])
def case(request: pytest.FixtureRequest) -> QueueCase:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def harness(case: QueueCase, tmp_path: Path, request: pytest.FixtureRequest) -> QueueHarness:
    return case.make(tmp_path, request, 8)


@pytest.fixture
def q(harness: QueueHarness) -> Queue:
    return harness.queue


def fake_clock(harness: QueueHarness) -> FakeClock:
    assert harness.clock is not None, "mark the test @pytest.mark.requires('fake_clock')"
    return harness.clock


def receive_one(q: Queue, visibility_timeout: float = 600) -> Message:
    messages = q.receive(visibility_timeout=visibility_timeout)
    assert len(messages) == 1, messages
    return messages[0]


def drain(q: Queue, expected: int, visibility_timeout: float = 600) -> list[Message]:
    """Receive until ``expected`` messages arrived (adapters may return short batches)."""
    got: list[Message] = []
    while len(got) < expected:
        batch = q.receive(max_messages=10, visibility_timeout=visibility_timeout)
        if not batch:
            break
        got.extend(batch)
    return got


def test_adapter_satisfies_protocol(q: Queue) -> None:
    assert isinstance(q, Queue)


def test_receive_returns_the_sent_body_with_its_id(q: Queue) -> None:
    body = '{"task_id": "t-0001", "note": "ünïcødé ✓"}'
    message_id = q.send(body)
    message = receive_one(q)
    assert (message.message_id, message.body, message.receive_count) == (message_id, body, 1)
    assert message.receipt


def test_received_message_is_hidden_from_other_receivers(q: Queue) -> None:
    q.send("only")
    receive_one(q, visibility_timeout=600)
    assert q.receive(max_messages=10) == []


def test_empty_queue_receives_nothing(q: Queue) -> None:
    assert q.receive(max_messages=10) == []


@pytest.mark.requires("fake_clock")
def test_delay_hides_message_until_due(harness: QueueHarness) -> None:
    clock, q = fake_clock(harness), harness.queue
    q.send("later", delay_seconds=30)
    assert q.receive() == []
    clock.advance(29.9)
    assert q.receive() == []
    clock.advance(0.1)
    assert receive_one(q).body == "later"


@pytest.mark.requires("fake_clock")
def test_visibility_timeout_expiry_redelivers_under_new_receipt(harness: QueueHarness) -> None:
    clock, q = fake_clock(harness), harness.queue
    q.send("task")
    first = receive_one(q, visibility_timeout=30)
    clock.advance(29)
    assert q.receive() == []
    clock.advance(1)
    second = receive_one(q)
    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.receipt != first.receipt


@pytest.mark.requires("fake_clock")
def test_extend_keeps_message_hidden(harness: QueueHarness) -> None:
    clock, q = fake_clock(harness), harness.queue
    q.send("task")
    message = receive_one(q, visibility_timeout=10)
    clock.advance(8)
    assert q.extend(message.receipt, 10)
    clock.advance(9)
    assert q.receive() == []
    clock.advance(1)
    assert receive_one(q).message_id == message.message_id


@pytest.mark.requires("fenced_receipts")
def test_stale_receipt_cannot_extend_or_delete(q: Queue) -> None:
    q.send("task")
    old = receive_one(q, visibility_timeout=0)
    new = receive_one(q, visibility_timeout=600)
    assert new.receipt != old.receipt
    assert q.extend(old.receipt, 600) is False
    assert q.delete(old.receipt) is False
    assert q.depth().total == 1
    assert q.extend(new.receipt, 600) is True
    assert q.delete(new.receipt) is True


@pytest.mark.requires("fenced_receipts")
def test_delete_removes_message_once(q: Queue) -> None:
    q.send("task")
    message = receive_one(q, visibility_timeout=0)
    assert q.delete(message.receipt) is True
    assert q.delete(message.receipt) is False
    assert q.receive() == []
    assert q.depth().total == 0


@pytest.mark.requires("fenced_receipts")
def test_delete_many_deletes_the_current_receipts_in_one_call(q: Queue) -> None:
    q.send_many([f"task-{n}" for n in range(12)])
    received = [m for _ in range(4) for m in q.receive(max_messages=3, visibility_timeout=60)]
    assert len(received) == 12
    stale = received[0].receipt
    assert q.delete(stale) is True
    assert q.delete_many([m.receipt for m in received]) == 11  # the deleted one is stale
    assert q.delete_many([]) == 0
    assert q.is_empty()
    assert q.depth().total == 0


def test_is_empty_sees_visible_in_flight_and_delayed_messages(q: Queue) -> None:
    assert q.is_empty()
    q.send("later", delay_seconds=600)
    assert not q.is_empty()  # delayed
    q.send("now")
    message = receive_one(q, visibility_timeout=600)
    assert message.body == "now"
    assert not q.is_empty()  # one in flight, one delayed


def test_unknown_receipt_is_refused(q: Queue) -> None:
    q.send("task")
    assert q.extend("not-a-receipt", 10) is False
    assert q.delete("not-a-receipt") is False
    assert q.depth().visible == 1


def test_receive_count_counts_deliveries(q: Queue) -> None:
    q.send("task")
    counts = [receive_one(q, visibility_timeout=0).receive_count for _ in range(3)]
    assert counts == [1, 2, 3]


def test_message_goes_to_dead_letters_after_max_receives(
    case: QueueCase, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    q = case.make(tmp_path, request, 2).queue
    message_id = q.send("poison")
    assert receive_one(q, visibility_timeout=0).receive_count == 1
    assert receive_one(q, visibility_timeout=0).receive_count == 2
    assert q.receive() == []
    dead = q.dead_letters()
    assert [(m.message_id, m.body) for m in dead] == [(message_id, "poison")]
    assert q.depth().total == 0


def test_depth_counts_visible_in_flight_and_delayed(q: Queue) -> None:
    q.send_many(["a", "b", "c"])
    q.send("d", delay_seconds=600)
    receive_one(q, visibility_timeout=600)
    depth = q.depth()
    assert (depth.visible, depth.in_flight, depth.delayed) == (2, 1, 1)
    assert depth.total == 4


def test_purge_removes_messages_and_dead_letters(
    case: QueueCase, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    q = case.make(tmp_path, request, 1).queue
    q.send("poison")
    receive_one(q, visibility_timeout=0)
    assert q.receive() == []  # the second delivery would exceed max_receives=1
    q.send_many(["a", "b"])
    q.send("c", delay_seconds=600)
    receive_one(q, visibility_timeout=600)
    assert len(q.dead_letters()) == 1
    q.purge()
    assert q.depth().total == 0
    assert q.dead_letters() == []
    assert q.receive() == []


@pytest.mark.requires("fake_clock", "ordered")
def test_delivers_oldest_visible_first(harness: QueueHarness) -> None:
    clock, q = fake_clock(harness), harness.queue
    q.send("d", delay_seconds=5)
    q.send_many(["a", "b", "c"])
    clock.advance(10)
    q.send("e")
    assert [receive_one(q).body for _ in range(5)] == ["a", "b", "c", "d", "e"]


@pytest.mark.requires("bulk")
def test_send_many_of_1000_delivers_each_once(q: Queue) -> None:
    bodies = [f'{{"task_id": "t-{i:05d}"}}' for i in range(1000)]
    q.send_many(bodies)
    assert q.depth().visible == 1000
    got = drain(q, 1000)
    assert Counter(m.body for m in got) == Counter(bodies)
    assert len({m.message_id for m in got}) == 1000
    assert q.depth().in_flight == 1000
    assert q.receive() == []


def test_max_messages_bounds_a_receive(q: Queue) -> None:
    q.send_many([str(i) for i in range(7)])
    assert 1 <= len(q.receive(max_messages=3)) <= 3


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.send("x", delay_seconds=-1),
        lambda q: q.send("x", delay_seconds=901),
        lambda q: q.send_many(["x"], delay_seconds=float("nan")),
        lambda q: q.receive(visibility_timeout=-1),
        lambda q: q.receive(max_messages=0),
        lambda q: q.receive(wait_seconds=21),
        lambda q: q.send("x" * 262_145),
    ],
)
def test_out_of_range_arguments_are_refused(q: Queue, call: object) -> None:
    with pytest.raises(ValueError):
        call(q)  # type: ignore[operator]
    assert q.depth().total == 0


def test_long_poll_returns_when_a_message_arrives(q: Queue) -> None:
    got: list[Message] = []
    receiver = threading.Thread(target=lambda: got.extend(q.receive(wait_seconds=15)))
    started = time.monotonic()
    receiver.start()
    q.send("wake")
    receiver.join(timeout=10)
    assert not receiver.is_alive()
    assert [m.body for m in got] == ["wake"]
    assert time.monotonic() - started < 10


def test_long_poll_on_empty_queue_waits_then_returns_nothing(q: Queue) -> None:
    started = time.monotonic()
    assert q.receive(wait_seconds=0.2) == []
    assert time.monotonic() - started >= 0.2


@pytest.mark.requires("shared")
def test_processes_consume_each_message_exactly_once(
    harness: QueueHarness, request: pytest.FixtureRequest
) -> None:
    assert harness.opener is not None
    workers, total = 4, 400
    producer = harness.opener()  # real time, like the consumers
    # The Queue protocol has no close(); adapters holding a connection do.
    request.addfinalizer(getattr(producer, "close", lambda: None))
    producer.send_many([f"m-{i:04d}" for i in range(total)])
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(workers, timeout=60), ctx.Queue()
    procs = [
        ctx.Process(target=consume_until_empty, args=(harness.opener, barrier, results, w))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    handled: list[tuple[int, str, bool]] = []
    done = 0
    deadline = time.monotonic() + 120
    while done < workers:
        try:
            kind, worker, body, deleted = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except stdlib_queue.Empty:
            pytest.fail(f"consumers stalled: {done} done, {len(handled)} handled")
        if kind == "done":
            done += 1
        else:
            handled.append((worker, body, deleted))
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert Counter(body for _, body, _ in handled) == Counter(f"m-{i:04d}" for i in range(total))
    assert all(deleted for _, _, deleted in handled)
    assert producer.depth().total == 0


# --- the embedded adapter (SQLite) and the fake beyond the shared contract ---------------


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "a/b", "a" * 64, "../x"])
def test_queue_names_are_validated(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidIdError):
        SqliteQueue(tmp_path / "state.db", name)
    with pytest.raises(InvalidIdError):
        MemoryQueue(name)


@pytest.fixture
def opened(request: pytest.FixtureRequest) -> Callable[[SqliteQueue], SqliteQueue]:
    """Registers a queue to be closed after the test (connections are not left to GC)."""

    def register(queue: SqliteQueue) -> SqliteQueue:
        request.addfinalizer(queue.close)
        return queue

    return register


def test_sqlite_queue_survives_reopen_and_keeps_queues_apart(
    tmp_path: Path, opened: Callable[[SqliteQueue], SqliteQueue]
) -> None:
    db = tmp_path / "ws" / "state.db"
    clock = FakeClock()
    first = SqliteQueue(db, "job-a", clock=clock)
    first.send("a1")
    opened(SqliteQueue(db, "job-b", clock=clock)).send("b1")
    first.close()
    reopened = opened(SqliteQueue(db, "job-a", clock=clock))
    assert [m.body for m in reopened.receive(max_messages=10)] == ["a1"]
    reopened.purge()
    assert [m.body for m in opened(SqliteQueue(db, "job-b", clock=clock)).receive()] == ["b1"]


def test_sqlite_receipt_of_another_queue_is_refused(
    tmp_path: Path, opened: Callable[[SqliteQueue], SqliteQueue]
) -> None:
    db = tmp_path / "state.db"
    a, b = opened(SqliteQueue(db, "job-a")), opened(SqliteQueue(db, "job-b"))
    a.send("a1")
    receipt = receive_one(a).receipt
    assert b.delete(receipt) is False
    assert a.delete(receipt) is True


def test_open_local_queue_accepts_sqlite_url_and_path(
    tmp_path: Path, opened: Callable[[SqliteQueue], SqliteQueue]
) -> None:
    db = tmp_path / "state.db"
    opened(open_local_queue(f"sqlite://{db}", "jobq")).send("x")
    assert [m.body for m in opened(open_local_queue(str(db), "jobq")).receive()] == ["x"]
    assert sqlite_path(f"sqlite://{db}") == db


@pytest.mark.parametrize(
    "url", ["", "dynamodb://prefix", "sqlite://host/db.sqlite", "file:///tmp/x.db"]
)
def test_open_local_queue_refuses_other_locations(url: str) -> None:
    with pytest.raises(ConfigError):
        open_local_queue(url, "jobq")
