"""The task list (filters, sorting, server-side pagination) and a task's drill-down.

The list pages through the state store's status index by task id (``after``), so page
N of a 100,000-task job costs what page 1 does. Filters that the index cannot answer
(error class, minimum duration) are applied to the pages read, reading on until the
page is full or :data:`FILTER_SCAN` tasks were looked at; sorting by anything but the
id sorts the first :data:`SORT_SCAN` matching tasks and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shardflow.cli.status_views import task_row
from shardflow.layout import Layout, LocalPaths, validate_id
from shardflow.models import Job, Task, TaskStatus
from shardflow.statestore.base import StateStore

if TYPE_CHECKING:
    from shardflow.objectstore.base import ObjectStore

TASK_SORTS = ("id", "duration", "attempts", "updated")
FILTER_SCAN = 5000
SORT_SCAN = 10_000
LOG_TAIL_BYTES = 256 * 1024
LOG_LINES = 500
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class TaskFilter:
    status: TaskStatus | None = None
    error_class: str | None = None
    min_seconds: float | None = None
    sort: str = "id"

    def matches(self, task: Task, now: float) -> bool:
        if self.error_class and (task.error_class or "") != self.error_class:
            return False
        if self.min_seconds is not None:
            took = (task.finished_at or now) - task.started_at if task.started_at else None
            if took is None or took < self.min_seconds:
                return False
        return True


@dataclass(frozen=True, slots=True)
class TaskPage:
    rows: list[dict[str, Any]]
    next_after: str | None
    scanned: int
    note: str | None


def _iter_pages(
    state: StateStore, job_id: str, status: TaskStatus | None, after: str | None
) -> Any:
    while True:
        page = state.list_tasks(job_id, status, limit=_PAGE, after=after)
        yield page
        if len(page) < _PAGE:
            return
        after = page[-1].task_id


def task_page(
    state: StateStore,
    job_id: str,
    flt: TaskFilter,
    *,
    now: float,
    after: str | None = None,
    limit: int = 50,
) -> TaskPage:
    """One page of the job's tasks matching ``flt``, from after task id ``after``.
    ``next_after`` is where the next page starts (None on the last page)."""
    if after is not None:
        validate_id(after, "task id")
    if flt.sort != "id":
        return _sorted_page(state, job_id, flt, now=now, limit=limit)
    rows: list[dict[str, Any]] = []
    scanned = 0
    last: str | None = after
    more = False  # stays False when the index ran out before the page filled
    for page in _iter_pages(state, job_id, flt.status, after):
        stopped = False
        for i, task in enumerate(page):
            scanned += 1
            last = task.task_id
            if flt.matches(task, now):
                rows.append(task_row(task, now))
            if len(rows) >= limit or scanned >= FILTER_SCAN:
                stopped = True
                more = i < len(page) - 1 or len(page) == _PAGE
                break
        if stopped:
            break
    note = None
    if len(rows) < limit and more:
        note = f"looked at {scanned:,} tasks for this page; the next page goes on from there"
    return TaskPage(rows, last if more else None, scanned, note)


def _sorted_page(
    state: StateStore, job_id: str, flt: TaskFilter, *, now: float, limit: int
) -> TaskPage:
    matched: list[Task] = []
    scanned = 0
    for page in _iter_pages(state, job_id, flt.status, None):
        scanned += len(page)
        matched += [t for t in page if flt.matches(t, now)]
        if len(matched) >= SORT_SCAN:
            break

    def duration(t: Task) -> float:
        return (t.finished_at or now) - t.started_at if t.started_at else -1.0

    keys: dict[str, Callable[[Task], Any]] = {
        "duration": duration,
        "attempts": lambda t: (t.attempts_used, t.attempt),
        "updated": lambda t: t.updated_at,
    }
    matched.sort(key=keys.get(flt.sort, duration), reverse=True)
    note = None
    if len(matched) >= SORT_SCAN:
        note = f"sorted among the first {SORT_SCAN:,} matching tasks (by id)"
    return TaskPage([task_row(t, now) for t in matched[:limit]], None, scanned, note)


def task_detail(
    job: Job, task: Task, *, now: float, open_store: Callable[[Job], ObjectStore | None]
) -> dict[str, Any]:
    """A task's fields, metrics grouped for display, and its attempts with their logs."""
    metrics = dict(getattr(task, "metrics", None) or {})
    core = {k: v for k, v in metrics.items() if not k.startswith(("errors.", "user."))}
    errors = {k.removeprefix("errors."): v for k, v in metrics.items() if k.startswith("errors.")}
    user = {k.removeprefix("user."): v for k, v in metrics.items() if k.startswith("user.")}
    attempts = []
    for number in range(1, task.attempt + 1):
        where = log_location(job, task.task_id, number, open_store)
        attempts.append(
            {
                "number": number,
                "won": number == task.result_attempt,
                "before_retry": number <= task.attempt_floor,
                "log": where,
            }
        )
    return {
        "task": task,
        "row": task_row(task, now),
        "metrics": sorted(core.items()),
        "error_metrics": sorted(errors.items()),
        "user_metrics": sorted(user.items()),
        "attempts": attempts,
    }


def _paths(job: Job) -> LocalPaths:
    workspace = Path(str(job.config.get("workspace", ".shardflow")))
    return LocalPaths(workspace, workspace / "scratch")


def log_location(
    job: Job, task_id: str, attempt: int, open_store: Callable[[Job], ObjectStore | None]
) -> str | None:
    """``"local"`` if the attempt's log is in the job's workspace, ``"store"`` if it was
    uploaded beside the results, else None."""
    if _paths(job).log_file(job.job_id, task_id, attempt).is_file():
        return "local"
    store = open_store(job)
    if store is not None and store.head(Layout(job.job_id).task_log(task_id, attempt)):
        return "store"
    return None


def read_log_tail(
    job: Job,
    task_id: str,
    attempt: int,
    open_store: Callable[[Job], ObjectStore | None],
    *,
    tail_bytes: int = LOG_TAIL_BYTES,
) -> tuple[bytes, bool] | None:
    """The last ``tail_bytes`` of an attempt's log and whether it was cut, from the
    workspace or else the object store; None if neither has it."""
    path = _paths(job).log_file(job.job_id, task_id, attempt)
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - tail_bytes))
            return fh.read(tail_bytes), size > tail_bytes
    except FileNotFoundError:
        pass
    store = open_store(job)
    if store is None:
        return None
    key = Layout(job.job_id).task_log(task_id, attempt)
    info = store.head(key)
    if info is None:
        return None
    start = max(0, info.size - tail_bytes)
    return store.get_range(key, start, info.size), start > 0


def parse_log(data: bytes, cut: bool, *, max_lines: int = LOG_LINES) -> list[dict[str, Any]]:
    """Log lines as records (``ts``, ``level``, ``msg``, ``exc``; ``raw`` for lines
    that are not the worker's JSON). A first line cut by the tail is dropped."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if cut and lines:
        lines = lines[1:]
    out = []
    for line in lines[-max_lines:]:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "msg" in record:
            out.append(
                {
                    "ts": record.get("ts"),
                    "level": str(record.get("level", "")),
                    "logger": str(record.get("logger", "")),
                    "msg": str(record.get("msg", "")),
                    "exc": str(record["exc"]) if record.get("exc") else None,
                }
            )
        else:
            out.append({"ts": None, "level": "", "logger": "", "msg": line, "exc": None})
    return out
