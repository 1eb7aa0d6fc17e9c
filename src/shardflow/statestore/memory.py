"""An in-process StateStore for unit tests, and a fake users may use for theirs.

Same contract as the SQLite adapter (the contract suite runs over both), within one
process: every operation holds one lock, so each is atomic as a transaction would be.
Rows are kept as the same JSON bytes the SQLite adapter stores, so a value that could
not be stored there (a non-JSON config value) fails here too, and a caller that mutates
a model's dict after writing it cannot change what is stored.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shardflow.errors import ConflictError, NotFoundError
from shardflow.layout import validate_id
from shardflow.models import Event, Job, Task, TaskGroup, TaskStatus
from shardflow.ratelimit.base import BucketState
from shardflow.statestore.base import TaskWrite, cas_each, status_counter
from shardflow.statestore.codec import (
    check_task_ids,
    decode_json,
    decode_model,
    encode_json,
    encode_model,
)


@dataclass(slots=True)
class _JobRows:
    """Everything stored for one job except its token buckets."""

    job: bytes | None = None
    created_at: float = 0.0
    version: int = 0
    tasks: dict[str, tuple[TaskStatus, int, bytes]] = dataclasses.field(default_factory=dict)
    task_ids: list[str] = dataclasses.field(default_factory=list)  # sorted, for paging
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    events: list[tuple[int, float, str, str, bytes]] = dataclasses.field(default_factory=list)
    groups: dict[str, bytes] = dataclasses.field(default_factory=dict)


class MemoryStateStore:
    """A :class:`~shardflow.statestore.base.StateStore` held in dicts, guarded by a lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._jobs: dict[str, _JobRows] = {}
        self._buckets: dict[str, bytes] = {}
        self._seq = itertools.count(1)

    @property
    def url(self) -> str:
        return "memory://"

    def close(self) -> None:
        """Nothing to release; the data stays readable."""

    def _rows(self, job_id: str) -> _JobRows:
        rows = self._jobs.get(job_id)
        if rows is None:
            rows = self._jobs[job_id] = _JobRows()
        return rows

    def _add(self, rows: _JobRows, deltas: Mapping[str, int]) -> None:
        for name, delta in deltas.items():
            if delta:
                rows.counters[name] = rows.counters.get(name, 0) + delta

    # -- jobs ------------------------------------------------------------------------

    def create_job(self, job: Job) -> bool:
        validate_id(job.job_id, "job id")
        body = encode_model(job)
        with self._lock:
            rows = self._rows(job.job_id)
            if rows.job is not None:
                return False
            rows.job, rows.created_at, rows.version = body, job.created_at, job.version
            return True

    def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            rows = self._jobs.get(job_id)
            body = None if rows is None else rows.job
        return None if body is None else decode_model(Job, body)

    def put_job(self, job: Job, expected_version: int) -> Job:
        new = dataclasses.replace(job, version=expected_version + 1)
        body = encode_model(new)
        with self._lock:
            rows = self._jobs.get(job.job_id)
            if rows is None or rows.job is None:
                raise NotFoundError(f"job {job.job_id} not found")
            if rows.version != expected_version:
                raise ConflictError(
                    f"job {job.job_id}: expected version {expected_version}, "
                    f"current version is {rows.version}"
                )
            rows.job, rows.created_at, rows.version = body, new.created_at, new.version
        return new

    def list_jobs(self, limit: int = 50) -> list[Job]:
        with self._lock:
            found = [
                (rows.created_at, job_id, rows.job)
                for job_id, rows in self._jobs.items()
                if rows.job is not None
            ]
        found.sort(key=lambda r: (r[0], r[1]), reverse=True)
        return [decode_model(Job, body) for _, _, body in found[: max(limit, 0)]]

    def delete_job(self, job_id: str) -> None:
        prefix = f"{job_id}/"
        with self._lock:
            self._jobs.pop(job_id, None)
            for key in [k for k in self._buckets if k.startswith(prefix)]:
                del self._buckets[key]

    # -- tasks -----------------------------------------------------------------------

    def register_tasks(self, tasks: Sequence[Task]) -> int:
        encoded = []
        for task in tasks:
            check_task_ids(task)
            encoded.append((task, encode_model(task)))
        inserted = 0
        with self._lock:
            touched: set[str] = set()
            for task, body in encoded:
                rows = self._rows(task.job_id)
                if task.task_id in rows.tasks:
                    continue
                rows.tasks[task.task_id] = (task.status, task.version, body)
                rows.task_ids.append(task.task_id)
                touched.add(task.job_id)
                self._add(rows, {status_counter(task.status): 1})
                inserted += 1
            for job_id in touched:
                # two sorted runs: timsort merges them in linear time
                self._jobs[job_id].task_ids.sort()
        return inserted

    def get_task(self, job_id: str, task_id: str) -> Task | None:
        with self._lock:
            rows = self._jobs.get(job_id)
            row = None if rows is None else rows.tasks.get(task_id)
        return None if row is None else decode_model(Task, row[2])

    def cas_task(self, task: Task, expected_version: int, counters: Mapping[str, int]) -> Task:
        new = dataclasses.replace(task, version=expected_version + 1)
        body = encode_model(new)
        with self._lock:
            rows = self._jobs.get(task.job_id)
            row = None if rows is None else rows.tasks.get(task.task_id)
            if rows is None or row is None:
                raise NotFoundError(f"task {task.job_id}/{task.task_id} not found")
            if row[1] != expected_version:
                raise ConflictError(
                    f"task {task.job_id}/{task.task_id}: expected version "
                    f"{expected_version}, current version is {row[1]}"
                )
            rows.tasks[task.task_id] = (new.status, new.version, body)
            self._add(rows, counters)
        return new

    def cas_tasks(self, writes: Sequence[TaskWrite]) -> list[Task | None]:
        """One :meth:`cas_task` per write; a refused one is None."""
        return cas_each(self, writes)

    def list_tasks(
        self,
        job_id: str,
        status: TaskStatus | None = None,
        *,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[Task]:
        bodies: list[bytes] = []
        with self._lock:
            rows = self._jobs.get(job_id)
            if rows is None:
                return []
            start = 0 if after is None else bisect.bisect_right(rows.task_ids, after)
            for task_id in itertools.islice(rows.task_ids, start, None):
                if len(bodies) >= limit:
                    break
                row_status, _, body = rows.tasks[task_id]
                if status is None or row_status is status:
                    bodies.append(body)
        return [decode_model(Task, body) for body in bodies]

    # -- counters --------------------------------------------------------------------

    def read_counters(self, job_id: str) -> dict[str, int]:
        with self._lock:
            rows = self._jobs.get(job_id)
            if rows is None:
                return {}
            return {name: value for name, value in rows.counters.items() if value}

    def add_counters(self, job_id: str, deltas: Mapping[str, int]) -> None:
        validate_id(job_id, "job id")
        with self._lock:
            self._add(self._rows(job_id), deltas)

    # -- events and task groups --------------------------------------------------------

    def append_event(self, event: Event) -> None:
        validate_id(event.job_id, "job id")
        detail = encode_json(event.detail)
        with self._lock:
            self._rows(event.job_id).events.append(
                (next(self._seq), event.at, event.kind, event.actor, detail)
            )

    def list_events(self, job_id: str, *, limit: int = 100) -> list[Event]:
        with self._lock:
            rows = self._jobs.get(job_id)
            events = [] if rows is None or limit <= 0 else rows.events[-limit:]
        return [
            Event(job_id=job_id, kind=kind, at=at, actor=actor, detail=decode_json(d), seq=seq)
            for seq, at, kind, actor, d in events
        ]

    def put_task_group(self, group: TaskGroup) -> None:
        validate_id(group.job_id, "job id")
        validate_id(group.group_id, "group id")
        body = encode_model(group)
        with self._lock:
            self._rows(group.job_id).groups[group.group_id] = body

    def list_task_groups(self, job_id: str) -> list[TaskGroup]:
        with self._lock:
            rows = self._jobs.get(job_id)
            bodies = [] if rows is None else list(rows.groups.values())
        groups = [decode_model(TaskGroup, body) for body in bodies]
        return sorted(groups, key=lambda g: (g.round, g.group_id))

    # -- token buckets -------------------------------------------------------------------

    def get_bucket(self, key: str) -> BucketState | None:
        with self._lock:
            body = self._buckets.get(key)
        return None if body is None else decode_model(BucketState, body)

    def cas_bucket(self, state: BucketState, expected_version: int) -> BucketState:
        new = dataclasses.replace(state, version=expected_version + 1)
        body = encode_model(new)
        with self._lock:
            current = self._buckets.get(state.key)
            stored = 0 if current is None else decode_model(BucketState, current).version
            if (current is None) != (expected_version == 0) or stored != expected_version:
                raise ConflictError(
                    f"bucket {state.key}: version {expected_version} is not the stored one"
                )
            self._buckets[state.key] = body
        return new

    def delete_buckets(self, prefix: str) -> int:
        with self._lock:
            keys = [k for k in self._buckets if k.startswith(prefix)]
            for key in keys:
                del self._buckets[key]
            return len(keys)
