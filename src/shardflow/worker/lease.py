"""The lease of the task a worker holds, kept alive by a heartbeat thread.

The task row's version is the fencing token: the heartbeat renews the lease with a
fenced write, and the commit uses the latest version under the same lock, so the two
never race. A renewal that is refused means another worker owns the task now: the
keeper marks the lease lost and the worker stops before it commits anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from shardflow.errors import ConflictError, StoreError
from shardflow.models import Task
from shardflow.queue.base import Queue
from shardflow.statestore.base import StateStore, renew_lease

log = logging.getLogger("shardflow.worker")


class LeaseKeeper:
    def __init__(
        self,
        state: StateStore,
        queue: Queue,
        task: Task,
        receipt: str,
        *,
        ttl: float,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._state = state
        self._queue = queue
        self._task = task
        self._receipt = receipt
        self._ttl = ttl
        self._interval = interval
        self._clock = clock
        self.lock = threading.Lock()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    @property
    def task(self) -> Task:
        return self._task

    def set_task(self, task: Task) -> None:
        """Record the task as written by a fenced write made under :attr:`lock`."""
        self._task = task

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def renew(self) -> bool:
        """One heartbeat: extend the lease and the message's visibility."""
        with self.lock:
            if self.lost.is_set():
                return False
            try:
                self._task = renew_lease(self._state, self._task, ttl=self._ttl, now=self._clock())
            except ConflictError:
                log.warning("lease lost: another worker owns the task now")
                self.lost.set()
                return False
            except StoreError as exc:
                # the store did not answer: keep trying until the lease runs out
                log.warning("lease renewal failed: %s", exc)
                if (self._task.lease_expires_at or 0) <= self._clock():
                    self.lost.set()
                return False
        try:
            self._queue.extend(self._receipt, self._ttl)
        except Exception as exc:  # the queue is only a delivery hint; the lease decides
            log.warning("visibility extension failed: %s", exc)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.renew()
