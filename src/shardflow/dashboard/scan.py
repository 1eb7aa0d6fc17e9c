"""The one task scan behind a job's charts and slowest tasks, cached per job.

Counters answer "how many" in constant time; "when did tasks finish" and "which took
longest" need the tasks themselves. A scan reads the job's SUCCEEDED and FAILED tasks
through the status index, in pages, up to :data:`MAX_TASKS`, and keeps only what the
page draws: (finished_at, items) pairs and the slowest tasks. It runs on a background
thread so a page never waits for more than ``wait`` seconds: a 100,000-task job's page
renders at once and shows the charts as soon as the scan is done (about a second per
80,000 tasks on SQLite). A finished job's scan is kept until the job row changes; a
running job's is refreshed when older than ``max_age``.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shardflow.models import Job, Task, TaskStatus
from shardflow.statestore.base import StateStore

MAX_TASKS = 300_000
SLOWEST = 10
# jobs up to this many tasks scan in about the time a page may wait; larger ones never wait
WAIT_TASKS = 20_000
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class JobScan:
    """What one scan saw. ``finished`` is sorted by time; ``truncated`` means the job
    has more final tasks than the scan read."""

    job_id: str
    job_version: int
    taken_at: float
    scanned: int
    truncated: bool
    finished: tuple[tuple[float, int], ...]
    slowest: tuple[Task, ...]


def scan_job(
    state: StateStore, job: Job, *, now: float, max_tasks: int = MAX_TASKS, slowest: int = SLOWEST
) -> JobScan:
    """Read the job's final tasks (bounded by ``max_tasks``) into a :class:`JobScan`."""
    finished: list[tuple[float, int]] = []
    heap: list[tuple[float, str, Task]] = []
    scanned = 0
    truncated = False
    for status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
        after: str | None = None
        while True:
            if scanned >= max_tasks:
                truncated = True
                break
            page = state.list_tasks(
                job.job_id, status, limit=min(_PAGE, max_tasks - scanned), after=after
            )
            for task in page:
                if task.finished_at is not None:
                    finished.append((task.finished_at, task.items_succeeded + task.items_failed))
                    if task.started_at is not None:
                        took = task.finished_at - task.started_at
                        entry = (took, task.task_id, task)
                        if len(heap) < slowest:
                            heapq.heappush(heap, entry)
                        elif entry > heap[0]:
                            heapq.heapreplace(heap, entry)
            scanned += len(page)
            if len(page) < _PAGE:
                break
            after = page[-1].task_id
    finished.sort()
    ordered = tuple(t for _took, _id, t in sorted(heap, reverse=True))
    return JobScan(job.job_id, job.version, now, scanned, truncated, tuple(finished), ordered)


class ScanCache:
    """Scans per job on one background thread; :meth:`get` waits at most ``wait``."""

    def __init__(
        self,
        state: StateStore,
        *,
        clock: Callable[[], float] = time.time,
        max_age: float = 10.0,
        wait: float = 0.25,
        max_tasks: int = MAX_TASKS,
    ) -> None:
        self._state = state
        self._clock = clock
        self._max_age = max_age
        self._wait = wait
        self._max_tasks = max_tasks
        self._lock = threading.Lock()
        self._done: dict[str, JobScan] = {}
        self._running: dict[str, concurrent.futures.Future[JobScan]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sf-scan")

    def _fresh(self, scan: JobScan, job: Job) -> bool:
        if job.status.is_final:
            return scan.job_version == job.version
        return self._clock() - scan.taken_at < self._max_age

    def get(self, job: Job) -> JobScan | None:
        """A fresh scan if one is cached or finishes within ``wait`` seconds (jobs of
        more than :data:`WAIT_TASKS` tasks do not wait), else the last one (possibly
        stale), else None while the first is still running. A failed scan raises its
        error to the callers waiting on it, and the next call starts another."""
        with self._lock:
            cached = self._done.get(job.job_id)
            if cached is not None and self._fresh(cached, job):
                return cached
            future = self._running.get(job.job_id)
            if future is None:
                future = self._pool.submit(self._scan, job)
                self._running[job.job_id] = future
        wait = self._wait if job.total_tasks <= WAIT_TASKS else 0.0
        try:
            return future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            return cached

    def _scan(self, job: Job) -> JobScan:
        try:
            scan = scan_job(self._state, job, now=self._clock(), max_tasks=self._max_tasks)
        except BaseException:
            with self._lock:
                self._running.pop(job.job_id, None)
            raise
        with self._lock:  # stored and un-marked at once, so no caller starts a duplicate
            self._done[job.job_id] = scan
            self._running.pop(job.job_id, None)
        return scan

    def close(self) -> None:
        """Stop taking scans; a scan in progress finishes on its own (it is bounded)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
