"""An in-process :class:`~shardflow.queue.base.Queue` for unit tests.

Same semantics and limits as the SQLite queue (:mod:`.local`), held in a dict behind a
lock; it passes the same contract suite. Give it a fake ``clock`` to test delays and
visibility without waiting.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shardflow.layout import validate_id
from shardflow.queue.base import Message, QueueDepth
from shardflow.queue.local import (
    check_body,
    check_delay,
    check_max_messages,
    check_max_receives,
    check_visibility,
    check_wait,
    new_receipt,
    poll_until,
)


@dataclass(slots=True)
class _Entry:
    seq: int
    message_id: str
    body: str
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None


class MemoryQueue:
    """A queue held in memory; thread-safe, not shared between processes."""

    def __init__(
        self,
        name: str,
        *,
        max_receives: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._name = validate_id(name, "queue name")
        self._max_receives = check_max_receives(max_receives)
        self._clock = clock
        self._lock = threading.Condition()
        self._messages: dict[int, _Entry] = {}
        self._dead: list[Message] = []
        self._seq = 0

    @property
    def name(self) -> str:
        return self._name

    def send(self, body: str, *, delay_seconds: float = 0) -> str:
        """Enqueue ``body``; it becomes receivable after ``delay_seconds``. Returns its id."""
        check_body(body)
        delay = check_delay(delay_seconds)
        with self._lock:
            return self._append(body, self._clock() + delay)

    def send_many(self, bodies: Sequence[str], *, delay_seconds: float = 0) -> None:
        """Enqueue every body: all are sent, or (on a bad body) none."""
        for body in bodies:
            check_body(body)
        delay = check_delay(delay_seconds)
        with self._lock:
            visible_at = self._clock() + delay
            for body in bodies:
                self._append(body, visible_at)

    def _append(self, body: str, visible_at: float) -> str:
        self._seq += 1
        message_id = uuid.uuid4().hex
        self._messages[self._seq] = _Entry(self._seq, message_id, body, visible_at)
        self._lock.notify_all()
        return message_id

    def receive(
        self, *, max_messages: int = 1, visibility_timeout: float = 60, wait_seconds: float = 0
    ) -> list[Message]:
        """Up to ``max_messages`` visible messages, oldest visible first, each hidden for
        ``visibility_timeout`` seconds under a fresh receipt; see :class:`.local.SqliteQueue`.
        """
        check_max_messages(max_messages)
        visibility = check_visibility(visibility_timeout)
        wait = check_wait(wait_seconds)

        def attempt() -> list[Message]:
            return self._receive_once(max_messages, visibility)

        if wait == 0:
            return attempt()
        return poll_until(time.monotonic() + wait, attempt, self._wait)

    def _wait(self, seconds: float) -> None:
        # A send wakes the waiter at once; the timeout covers delays and expiries.
        with self._lock:
            self._lock.wait(seconds)

    def _receive_once(self, max_messages: int, visibility: float) -> list[Message]:
        delivered: list[Message] = []
        with self._lock:
            now = self._clock()
            ready = sorted(
                (e for e in self._messages.values() if e.visible_at <= now),
                key=lambda e: (e.visible_at, e.seq),
            )
            for entry in ready:
                if len(delivered) == max_messages:
                    break
                if entry.receive_count + 1 > self._max_receives:
                    del self._messages[entry.seq]
                    self._dead.append(
                        Message(entry.message_id, entry.body, "", entry.receive_count)
                    )
                    continue
                entry.receive_count += 1
                entry.receipt = new_receipt()
                entry.visible_at = now + visibility
                delivered.append(
                    Message(entry.message_id, entry.body, entry.receipt, entry.receive_count)
                )
        return delivered

    def _find(self, receipt: str) -> _Entry | None:
        for entry in self._messages.values():
            if entry.receipt is not None and entry.receipt == receipt:
                return entry
        return None

    def extend(self, receipt: str, visibility_timeout: float) -> bool:
        """Hide the message for ``visibility_timeout`` more seconds; False if stale."""
        visibility = check_visibility(visibility_timeout)
        with self._lock:
            entry = self._find(receipt)
            if entry is None:
                return False
            entry.visible_at = self._clock() + visibility
            return True

    def delete(self, receipt: str) -> bool:
        """Remove the message; False when ``receipt`` is not its current receipt."""
        with self._lock:
            entry = self._find(receipt)
            if entry is None:
                return False
            del self._messages[entry.seq]
            return True

    def delete_many(self, receipts: Sequence[str]) -> int:
        return sum(self.delete(r) for r in receipts)

    def depth(self) -> QueueDepth:
        """Counts now: visible, in flight (received and hidden), delayed (never received)."""
        with self._lock:
            now = self._clock()
            entries = list(self._messages.values())
        return QueueDepth(
            visible=sum(e.visible_at <= now for e in entries),
            in_flight=sum(e.visible_at > now and e.receive_count > 0 for e in entries),
            delayed=sum(e.visible_at > now and e.receive_count == 0 for e in entries),
        )

    def is_empty(self) -> bool:
        with self._lock:
            return not self._messages

    def dead_letters(self, limit: int = 100) -> list[Message]:
        """Up to ``limit`` dead letters, oldest first, with an empty receipt."""
        with self._lock:
            return self._dead[: max(0, int(limit))]

    def purge(self) -> None:
        """Remove every message, dead letters included."""
        with self._lock:
            self._messages.clear()
            self._dead.clear()

    def close(self) -> None:
        """Nothing to release; here so the fake matches :class:`.local.SqliteQueue`."""
