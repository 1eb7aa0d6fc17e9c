"""A slot's commit group: finished attempts committed together.

An attempt ends with its result objects and ``.done`` marker written but not yet flushed
(``durable=False``). The group collects such attempts for a moment, then, in this order:

1. :meth:`ObjectStore.sync` makes every object of the group durable at once;
2. one :meth:`StateStore.cas_tasks` commits their task rows, each fenced on the version
   the slot holds (a refused one was taken over; its new holder adopts the marker);
3. one :meth:`Queue.delete_many` deletes their messages.

So a task row never names an object that a crash could still take back, and one flush and
two writes serve the whole group. The group is flushed when it holds
:attr:`CommitGroup.max_tasks` attempts, when its oldest has waited
:attr:`CommitGroup.max_wait` seconds, and whenever the slot has nothing else to do.
:meth:`CommitGroup.hand_off` runs the flush on a committer thread, so that the slot's next
attempt computes while the disk syncs (one flush at a time: the next hand-off waits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from shardflow.faults import fault_point
from shardflow.statestore.base import TaskWrite, commit_write
from shardflow.worker.env import WorkerEnv
from shardflow.worker.lease import LeaseKeeper
from shardflow.worker.metrics import metric_counters
from shardflow.worker.task import Finished

log = logging.getLogger("shardflow.worker")


class CommitGroup:
    def __init__(
        self,
        env: WorkerEnv,
        leases: LeaseKeeper,
        *,
        max_tasks: int = 64,
        max_wait: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.env = env
        self.leases = leases
        self.max_tasks = max_tasks
        self.max_wait = max_wait
        self._clock = clock
        self._pending: list[Finished] = []
        self._since = 0.0
        self._committer: ThreadPoolExecutor | None = None
        self._in_flight: Future[dict[str, str]] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, finished: Finished) -> None:
        if not self._pending:
            self._since = self._clock()
        self._pending.append(finished)

    def due(self) -> bool:
        return bool(self._pending) and (
            len(self._pending) >= self.max_tasks or self._clock() - self._since >= self.max_wait
        )

    def hand_off(self) -> dict[str, str]:
        """Start committing the pending attempts on the committer thread; return the
        outcomes of the flush before (it is waited for first)."""
        done = self.wait()
        pending, self._pending = self._pending, []
        if pending:
            if self._committer is None:
                self._committer = ThreadPoolExecutor(1, thread_name_prefix="committer")
            self._in_flight = self._committer.submit(self._commit, pending)
        return done

    def wait(self) -> dict[str, str]:
        """The outcomes of the flush on the committer thread, once it is done (its
        error, if it failed)."""
        in_flight, self._in_flight = self._in_flight, None
        return {} if in_flight is None else in_flight.result()

    def flush(self) -> dict[str, str]:
        """Commit every pending attempt now (after the one in flight); return each
        task's outcome (``succeeded`` or ``lost``)."""
        done = self.wait()
        pending, self._pending = self._pending, []
        return done | self._commit(pending)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.shutdown(wait=True)

    def _commit(self, pending: list[Finished]) -> dict[str, str]:
        if not pending:
            return {}
        env, leases = self.env, self.leases
        env.store.sync()
        fault_point("before_commit")
        outcomes: dict[str, str] = {}
        committed: list[Finished] = []
        with leases.lock:
            writes: list[TaskWrite] = []
            live: list[Finished] = []
            for f in pending:
                if leases.lost(f.task_id):
                    outcomes[f.task_id] = "lost"
                    continue
                m = f.marker
                writes.append(
                    commit_write(
                        leases.task(f.task_id),
                        now=env.clock(),
                        result_attempt=m.attempt,
                        items_total=m.items_total,
                        items_succeeded=m.items_succeeded,
                        items_failed=m.items_failed,
                        items_rejected=m.items_rejected,
                        rows=m.rows,
                        metrics=f.metrics,
                        metric_counters=metric_counters(f.metrics or {}),
                    )
                )
                live.append(f)
            for f, task in zip(live, env.state.cas_tasks(writes), strict=True):
                if task is None:
                    log.warning(
                        "commit of %s refused: another worker holds the task; "
                        "it will adopt the marker",
                        f.task_id,
                    )
                    leases.mark_lost(f.task_id)
                    outcomes[f.task_id] = "lost"
                else:
                    leases.set_task(task)
                    outcomes[f.task_id] = "succeeded"
                    committed.append(f)
        env.queue.delete_many([f.receipt for f in committed])
        for f in pending:
            leases.release(f.task_id)
            if f.checkpoint is not None and outcomes[f.task_id] == "succeeded":
                f.checkpoint.discard_task()
        log.debug("committed %d of %d tasks", len(committed), len(pending))
        return outcomes
