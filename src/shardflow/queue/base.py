"""The Queue port: dispatch and retries of task ids.

Adapters: :mod:`.local` (a table in the SQLite state file), :mod:`.sqs` (Amazon SQS),
:mod:`.memory` (fake for unit tests). One queue serves one job.

Contract (``tests/contract/test_queue.py``):

- ``send`` with ``delay_seconds`` makes the message invisible until then.
- ``receive`` hands each visible message to one receiver and hides it for
  ``visibility_timeout`` seconds; ``receive_count`` counts deliveries.
- A message received more than ``max_receives`` times goes to the dead-letter list
  instead of being delivered again.
- ``extend`` keeps a received message hidden (the lease heartbeat); ``delete`` removes it,
  ``delete_many`` several at once (a slot deletes the messages of a commit group in one
  call). They return False (``delete_many``: do not count) for a receipt that is no longer
  current (the message was received again by someone else), instead of raising.
- Delivery is at least once: consumers must be idempotent (the state store decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SQS_MAX_DELAY_SECONDS = 900
SQS_MAX_BATCH = 10
"""Messages per SQS batch call (send, receive, delete); a slot receives at most this many."""


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    body: str
    receipt: str
    receive_count: int


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


@runtime_checkable
class Queue(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, body: str, *, delay_seconds: float = 0) -> str: ...

    def send_many(self, bodies: Sequence[str], *, delay_seconds: float = 0) -> None: ...

    def receive(
        self, *, max_messages: int = 1, visibility_timeout: float = 60, wait_seconds: float = 0
    ) -> list[Message]: ...

    def extend(self, receipt: str, visibility_timeout: float) -> bool: ...

    def delete(self, receipt: str) -> bool: ...

    def delete_many(self, receipts: Sequence[str]) -> int:
        """Delete the messages of ``receipts``; return how many were current."""
        ...

    def depth(self) -> QueueDepth: ...

    def is_empty(self) -> bool:
        """No message at all: none visible, in flight or delayed (cheaper than depth)."""
        ...

    def dead_letters(self, limit: int = 100) -> list[Message]: ...

    def purge(self) -> None:
        """Remove every message, dead letters included (job purge)."""
        ...
