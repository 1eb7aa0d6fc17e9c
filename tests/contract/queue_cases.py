"""The Queue adapters that ``test_queue.py`` runs its contract suite against.

To add an adapter, append one :class:`QueueCase` to :data:`QUEUE_CASES`. Its factory
receives ``tmp_path``, the pytest ``request`` (for finalizers and server fixtures) and
``max_receives``, and returns a fresh, empty queue in a :class:`QueueHarness`:

- ``clock``: a :class:`FakeClock` the queue reads, or None for an adapter that runs on
  real time (SQS). Cases that move time forward are skipped without one.
- ``opener``: a picklable callable that opens the same queue in another process (with
  real time), or None; the multi-process case is skipped without one.

Module-level worker functions live here (not in the test module) so that ``spawn``
children import only this small module.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardflow.queue.base import Queue
from shardflow.queue.local import SqliteQueue, open_local_queue
from shardflow.queue.memory import MemoryQueue


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class QueueHarness:
    queue: Queue
    clock: FakeClock | None = None
    opener: Callable[[], Queue] | None = None


Factory = Callable[[Path, pytest.FixtureRequest, int], QueueHarness]


@dataclass(frozen=True)
class QueueCase:
    id: str
    make: Factory
    marks: tuple[pytest.MarkDecorator, ...] = ()
    # "shared" (reachable from other processes), "fake_clock" (time is injected),
    # "ordered"; tests marked ``@pytest.mark.requires(...)`` run only where they hold
    capabilities: frozenset[str] = frozenset()


def _queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest, max_receives: int) -> QueueHarness:
    clock = FakeClock()
    db = tmp_path / "state.db"
    name = _queue_name()
    queue = SqliteQueue(db, name, max_receives=max_receives, clock=clock)
    request.addfinalizer(queue.close)
    opener = functools.partial(open_local_queue, str(db), name, max_receives=max_receives)
    return QueueHarness(queue, clock, opener)


def _memory(tmp_path: Path, request: pytest.FixtureRequest, max_receives: int) -> QueueHarness:
    clock = FakeClock()
    return QueueHarness(MemoryQueue(_queue_name(), max_receives=max_receives, clock=clock), clock)


QUEUE_CASES: list[QueueCase] = [
    QueueCase(
        "sqlite",
        _sqlite,
        capabilities=frozenset({"shared", "fake_clock", "ordered", "fenced_receipts", "bulk"}),
    ),
    QueueCase(
        "memory",
        _memory,
        capabilities=frozenset({"fake_clock", "ordered", "fenced_receipts", "bulk"}),
    ),
]


def _sqs(tmp_path: Path, request: pytest.FixtureRequest, max_receives: int) -> QueueHarness:
    from shardflow.queue.sqs import open_sqs_queue

    settings = request.getfixturevalue("aws_settings")
    opener = functools.partial(
        open_sqs_queue,
        f"sqs://{request.getfixturevalue('sqs_prefix')}",
        "job-a",
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        max_receives=max_receives,
    )
    return QueueHarness(opener(), None, opener)


# SQS is at-least-once and accepts stale receipts (moto too): no "fenced_receipts", no
# "shared" exactly-once consumption, no ordering; its slow bulk receive is not "bulk"
QUEUE_CASES.append(QueueCase("sqs", _sqs, marks=(pytest.mark.aws,)))


def consume_until_empty(
    opener: Callable[[], Queue], barrier: Any, results: Any, worker: int
) -> None:
    """Spawned consumer: receive, report, delete, until a receive comes back empty.

    Reports ``("handled", worker, body, deleted)`` per message and ``("done", worker,
    "", True)`` at the end, through the multiprocessing queue ``results``.
    """
    queue = opener()
    barrier.wait()
    while True:
        messages = queue.receive(max_messages=2, visibility_timeout=120)
        if not messages:
            break
        for message in messages:
            results.put(("handled", worker, message.body, queue.delete(message.receipt)))
    results.put(("done", worker, "", True))
