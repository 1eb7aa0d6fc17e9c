"""The leases a worker slot holds, kept alive by one heartbeat thread.

A slot holds the lease of the task it runs and of the finished tasks waiting in its commit
group. Each task row's version is the fencing token: the heartbeat renews every held lease
with a fenced write, and commits use the latest version under the same lock, so the two
never race. A renewal that is refused means another worker owns that task now: the keeper
marks the lease lost and the slot stops the attempt (or drops the finished task from its
group) before it commits anything for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shardflow.errors import ConflictError, StoreError
from shardflow.models import Task
from shardflow.queue.base import Queue
from shardflow.statestore.base import StateStore, renew_lease

log = logging.getLogger("shardflow.worker")


@dataclass
class Held:
    task: Task
    receipt: str
    lost: bool = False


class LeaseKeeper:
    def __init__(
        self,
        state: StateStore,
        queue: Queue,
        *,
        ttl: float,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._state = state
        self._queue = queue
        self._ttl = ttl
        self._interval = interval
        self._clock = clock
        self.lock = threading.Lock()
        self._held: dict[str, Held] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what is held (callers hold :attr:`lock` around a read-modify-write) --------------

    def hold(self, task: Task, receipt: str) -> None:
        """Keep ``task``'s lease (just leased under ``receipt``) alive from now on."""
        with self.lock:
            self._held[task.task_id] = Held(task, receipt)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()

    def task(self, task_id: str) -> Task:
        """The task as last written by this slot."""
        return self._held[task_id].task

    def set_task(self, task: Task) -> None:
        """Record the task as written by a fenced write made under :attr:`lock`."""
        self._held[task.task_id].task = task

    def lost(self, task_id: str) -> bool:
        held = self._held.get(task_id)
        return held is None or held.lost

    def mark_lost(self, task_id: str) -> None:
        held = self._held.get(task_id)
        if held is not None:
            held.lost = True

    def release(self, task_id: str) -> None:
        """Stop keeping the task's lease (it was committed, failed, retried or released)."""
        with self.lock:
            self._held.pop(task_id, None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=30)

    # -- the heartbeat -----------------------------------------------------------------

    def renew(self) -> None:
        """One heartbeat: extend every held lease and its message's visibility."""
        with self.lock:
            receipts = []
            for task_id, held in list(self._held.items()):
                if held.lost:
                    continue
                try:
                    held.task = renew_lease(
                        self._state, held.task, ttl=self._ttl, now=self._clock()
                    )
                except ConflictError:
                    log.warning("lease lost: another worker owns %s now", task_id)
                    held.lost = True
                    continue
                except StoreError as exc:
                    # the store did not answer: keep trying until the lease runs out
                    log.warning("lease renewal of %s failed: %s", task_id, exc)
                    if (held.task.lease_expires_at or 0) <= self._clock():
                        held.lost = True
                    continue
                receipts.append(held.receipt)
        for receipt in receipts:
            try:
                self._queue.extend(receipt, self._ttl)
            except Exception as exc:  # the queue is only a delivery hint; the lease decides
                log.warning("visibility extension failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.renew()
