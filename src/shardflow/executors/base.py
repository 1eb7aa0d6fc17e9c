"""The Executor port: start worker slots, see how they are, stop them.

An executor never runs tasks itself: it starts *slots* (local processes or Slurm array
elements) that each run ``python -m shardflow.worker`` and pull task ids from the queue
until it is empty (DESIGN.md, Dispatch: workers pull).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class SlotState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_active(self) -> bool:
        return self in (SlotState.PENDING, SlotState.RUNNING, SlotState.UNKNOWN)


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """What to start: ``count`` slots for ``job_id`` in task group ``group_id``.

    ``argv`` is the worker command line (the same for every executor); ``env`` adds to
    the slot's environment.
    """

    job_id: str
    group_id: str
    count: int
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Executor(Protocol):
    @property
    def name(self) -> str: ...

    def start_slots(self, spec: SlotSpec) -> list[str]:
        """Start the slots; return handles (pids, Slurm array ids) to record."""
        ...

    def poll(self, handles: Sequence[str]) -> dict[str, SlotState]: ...

    def cancel(self, handles: Sequence[str]) -> None: ...

    def preflight(self) -> None:
        """Raise a ShardflowError saying what to fix when this executor cannot start
        slots at all (checked before a job is made)."""
        ...
