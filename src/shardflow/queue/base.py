"""The Queue port: dispatch and retries of task ids.

Adapters: :mod:`.local` (a table in the SQLite state file), :mod:`.sqs` (Amazon SQS),
:mod:`.memory` (fake for unit tests). One queue serves one job.

Contract (``tests/contract/test_queue.py``):

- ``send`` with ``delay_seconds`` makes the message invisible until then.
- ``receive`` hands each visible message to one receiver and hides it for
  ``visibility_timeout`` seconds; ``receive_count`` counts deliveries.
- A message received more than ``max_receives`` times goes to the dead-letter list
  instead of being delivered again.
- ``extend`` keeps a received message hidden (the lease heartbeat); ``delete`` removes it.
  Both return False for a receipt that is no longer current (the message was received
  again by someone else), instead of raising.
- Delivery is at least once: consumers must be idempotent (the state store decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SQS_MAX_DELAY_SECONDS = 900


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

    def depth(self) -> QueueDepth: ...

    def dead_letters(self, limit: int = 100) -> list[Message]: ...

    def purge(self) -> None:
        """Remove every message, dead letters included (job purge)."""
        ...
