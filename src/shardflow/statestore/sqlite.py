"""The embedded default StateStore: one SQLite file shared by every local process.

Workers, the CLI and the coordinator each open their own connection to the same file
(WAL mode, so readers never block the writer). Every write is one short ``BEGIN
IMMEDIATE`` transaction: the write lock is taken up front, so two writers queue on
``busy_timeout`` instead of failing to upgrade a read lock. The hot columns (``status``,
``version``) are real columns, so a fenced write is one ``UPDATE ... WHERE version = ?``.

One store object may be used by several threads of a process (a worker's heartbeat
thread); a lock serialises them on the one connection. A forked child never reuses its
parent's connection: the store notices the new pid and opens its own.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from shardflow.errors import ConfigError, ConflictError, NotFoundError, StoreError
from shardflow.layout import validate_id
from shardflow.models import Event, Job, Task, TaskGroup, TaskStatus
from shardflow.ratelimit.base import BucketState
from shardflow.statestore import sqlite_sql as stmt
from shardflow.statestore.base import TaskWrite, status_counter
from shardflow.statestore.codec import (
    check_task_ids,
    decode_json,
    decode_model,
    encode_json,
    encode_model,
)

SCHEMA_VERSION = 1
_SCHEMA_KEY = "statestore.schema_version"
_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


class SqliteStateStore:
    """A :class:`~shardflow.statestore.base.StateStore` in one SQLite file.

    ``synchronous`` is NORMAL by default (WAL: durable across process crashes, the last
    commits may be lost on power failure) or FULL (fsync at every commit).
    ``busy_timeout`` is how long a write waits for another process's write lock before
    :class:`StoreError`. Every sqlite3 error surfaces as :class:`StoreError`.
    """

    def __init__(
        self, path: Path, *, synchronous: str = "NORMAL", busy_timeout: float = 60.0
    ) -> None:
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ConfigError(f"sqlite synchronous must be one of {sorted(_SYNCHRONOUS)}")
        self._path = Path(path).absolute()
        self._synchronous = sync
        self._busy_timeout = float(busy_timeout)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()

    @property
    def url(self) -> str:
        query = "" if self._synchronous == "NORMAL" else f"?synchronous={self._synchronous}"
        return f"sqlite://{self._path}{query.lower()}"

    @property
    def path(self) -> Path:
        return self._path

    # -- connection and transactions -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE
                check_same_thread=False,  # guarded by self._lock
            )
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                db.close()
                raise StoreError(
                    f"{self._path}: SQLite cannot use WAL here (a network filesystem?); "
                    "put the state file on a local disk or use dynamodb://"
                )
            db.execute(f"PRAGMA synchronous={self._synchronous}")  # validated above
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in stmt.SCHEMA:
                    db.execute(statement)
                db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    (_SCHEMA_KEY, str(SCHEMA_VERSION)),
                )
                (stored,) = db.execute(
                    "SELECT value FROM meta WHERE key = ?", (_SCHEMA_KEY,)
                ).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self._path}: {exc}") from exc
        if int(stored) != SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{self._path} has state schema {stored}; this shardflow reads {SCHEMA_VERSION}"
            )
        return db

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"state store {self.url} is closed")
        return self._db

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # a forked child: the parent's connection and lock are not ours to use
            self._lock = threading.Lock()
            self._pid = os.getpid()
            if not self._closed:
                self._db = self._connect()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self._check_fork()
        with self._lock:
            db = self._connection()
            try:
                yield db
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.url}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; rolled back if the body raises."""
        self._check_fork()
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"state store {self.url}: {exc}") from exc

    def _one(self, sql: str, params: tuple[object, ...]) -> Any:
        with self._read() as db:
            return db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple[object, ...]) -> list[Any]:
        with self._read() as db:
            return db.execute(sql, params).fetchall()

    def _change(self, sql: str, params: tuple[object, ...]) -> int:
        """Run one write statement in its own transaction; the number of rows changed."""
        with self._write() as db:
            return db.execute(sql, params).rowcount

    def close(self) -> None:
        """Close the connection; later calls raise StoreError. Idempotent."""
        with self._lock:
            if not self._closed and self._pid == os.getpid():
                self._db.close()
            self._closed = True

    # -- jobs ------------------------------------------------------------------------

    def create_job(self, job: Job) -> bool:
        validate_id(job.job_id, "job id")
        body = encode_model(job)
        params = (job.job_id, job.created_at, job.version, body)
        return self._change(stmt.CREATE_JOB, params) == 1

    def get_job(self, job_id: str) -> Job | None:
        row = self._one("SELECT body FROM jobs WHERE job_id = ?", (job_id,))
        return None if row is None else decode_model(Job, row[0])

    def put_job(self, job: Job, expected_version: int) -> Job:
        new = dataclasses.replace(job, version=expected_version + 1)
        body = encode_model(new)
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET created_at = ?, version = ?, body = ? "
                "WHERE job_id = ? AND version = ?",
                (new.created_at, new.version, body, job.job_id, expected_version),
            )
            if cur.rowcount != 1:
                found = db.execute("SELECT version FROM jobs WHERE job_id = ?", (job.job_id,))
                _refuse(f"job {job.job_id}", expected_version, found.fetchone())
        return new

    def list_jobs(self, limit: int = 50) -> list[Job]:
        sql = "SELECT body FROM jobs ORDER BY created_at DESC, job_id DESC LIMIT ?"
        return [decode_model(Job, body) for (body,) in self._all(sql, (max(limit, 0),))]

    def delete_job(self, job_id: str) -> None:
        prefix = f"{job_id}/"
        with self._write() as db:
            # table names are constants here; only values are bound
            for table in ("jobs", "tasks", "counters", "events", "task_groups"):
                db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
            db.execute(stmt.DELETE_BUCKETS, (len(prefix), prefix))

    # -- tasks -----------------------------------------------------------------------

    def register_tasks(self, tasks: Sequence[Task]) -> int:
        """Insert the tasks that do not exist yet; count them per status; return how many."""
        groups: dict[tuple[str, TaskStatus], list[dict[str, object]]] = {}
        for task in tasks:
            check_task_ids(task)
            groups.setdefault((task.job_id, task.status), []).append(_task_params(task))
        inserted = 0
        with self._write() as db:
            for (job_id, status), rows in groups.items():
                count = db.executemany(stmt.INSERT_TASK, rows).rowcount
                if count > 0:
                    db.execute(stmt.ADD_COUNTER, (job_id, status_counter(status), count))
                    inserted += count
        return inserted

    def get_task(self, job_id: str, task_id: str) -> Task | None:
        row = self._one(
            "SELECT body FROM tasks WHERE job_id = ? AND task_id = ?", (job_id, task_id)
        )
        return None if row is None else decode_model(Task, row[0])

    def cas_task(self, task: Task, expected_version: int, counters: Mapping[str, int]) -> Task:
        """Write ``task`` as version ``expected_version + 1`` and apply ``counters``.

        Raises ConflictError if the stored version differs, NotFoundError if the task
        does not exist; neither the task nor any counter changes then.
        """
        new = dataclasses.replace(task, version=expected_version + 1)
        params = _task_params(new, expected=expected_version)
        deltas = [(task.job_id, name, delta) for name, delta in counters.items() if delta]
        with self._write() as db:
            if db.execute(stmt.UPDATE_TASK, params).rowcount != 1:
                found = db.execute(stmt.TASK_VERSION, (task.job_id, task.task_id))
                _refuse(f"task {task.job_id}/{task.task_id}", expected_version, found.fetchone())
            if deltas:
                db.executemany(stmt.ADD_COUNTER, deltas)
        return new

    def cas_tasks(self, writes: Sequence[TaskWrite]) -> list[Task | None]:
        """Every write as :meth:`cas_task` would make it, in one transaction; a refused
        write (another version stored, or no such task) is None and changes nothing."""
        done: list[Task | None] = []
        deltas: dict[tuple[str, str], int] = {}
        params = []
        for write in writes:
            new = dataclasses.replace(write.task, version=write.expected_version + 1)
            params.append(_task_params(new, expected=write.expected_version))
            done.append(new)
        with self._write() as db:
            for n, (write, row) in enumerate(zip(writes, params, strict=True)):
                if db.execute(stmt.UPDATE_TASK, row).rowcount != 1:
                    done[n] = None
                    continue
                for name, delta in write.counters.items():
                    if delta:
                        key = (write.task.job_id, name)
                        deltas[key] = deltas.get(key, 0) + delta
            if deltas:
                db.executemany(stmt.ADD_COUNTER, [(j, name, d) for (j, name), d in deltas.items()])
        return done

    def list_tasks(
        self,
        job_id: str,
        status: TaskStatus | None = None,
        *,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[Task]:
        """Up to ``limit`` tasks with ``task_id > after``, in task id order."""
        start, count = after or "", max(limit, 0)
        if status is None:
            rows = self._all(stmt.LIST_TASKS, (job_id, start, count))
        else:
            rows = self._all(stmt.LIST_TASKS_BY_STATUS, (job_id, status.value, start, count))
        return [decode_model(Task, body) for (body,) in rows]

    # -- counters --------------------------------------------------------------------

    def read_counters(self, job_id: str) -> dict[str, int]:
        """Every counter of the job whose value is not zero."""
        sql = "SELECT name, value FROM counters WHERE job_id = ? AND value != 0"
        return {name: int(value) for name, value in self._all(sql, (job_id,))}

    def add_counters(self, job_id: str, deltas: Mapping[str, int]) -> None:
        validate_id(job_id, "job id")
        rows = [(job_id, name, delta) for name, delta in deltas.items() if delta]
        if not rows:
            return
        with self._write() as db:
            db.executemany(stmt.ADD_COUNTER, rows)

    # -- events and task groups --------------------------------------------------------

    def append_event(self, event: Event) -> None:
        """Append to the job's history; the store numbers it (``seq`` is ignored)."""
        validate_id(event.job_id, "job id")
        params = (event.job_id, event.at, event.kind, event.actor, encode_json(event.detail))
        self._change(stmt.APPEND_EVENT, params)

    def list_events(self, job_id: str, *, limit: int = 100) -> list[Event]:
        rows = self._all(stmt.LATEST_EVENTS, (job_id, max(limit, 0)))
        return [
            Event(job_id=job_id, kind=kind, at=at, actor=actor, detail=decode_json(d), seq=seq)
            for seq, at, kind, actor, d in reversed(rows)
        ]

    def put_task_group(self, group: TaskGroup) -> None:
        """Create or replace the group (its handles grow as slots start)."""
        validate_id(group.job_id, "job id")
        validate_id(group.group_id, "group id")
        params = (group.job_id, group.group_id, encode_model(group))
        self._change(stmt.PUT_GROUP, params)

    def list_task_groups(self, job_id: str) -> list[TaskGroup]:
        """The job's groups by round, then group id."""
        rows = self._all("SELECT body FROM task_groups WHERE job_id = ?", (job_id,))
        groups = [decode_model(TaskGroup, body) for (body,) in rows]
        return sorted(groups, key=lambda g: (g.round, g.group_id))

    # -- token buckets -------------------------------------------------------------------

    def get_bucket(self, key: str) -> BucketState | None:
        row = self._one("SELECT body FROM buckets WHERE key = ?", (key,))
        return None if row is None else decode_model(BucketState, row[0])

    def cas_bucket(self, state: BucketState, expected_version: int) -> BucketState:
        new = dataclasses.replace(state, version=expected_version + 1)
        body = encode_model(new)
        params: tuple[object, ...]
        if expected_version == 0:
            statement, params = stmt.CREATE_BUCKET, (state.key, new.version, body)
        else:
            statement = stmt.UPDATE_BUCKET
            params = (new.version, body, state.key, expected_version)
        if self._change(statement, params) != 1:
            raise ConflictError(f"bucket {state.key}: version {expected_version} is not stored")
        return new

    def delete_buckets(self, prefix: str) -> int:
        return self._change(stmt.DELETE_BUCKETS, (len(prefix), prefix))


def _task_params(task: Task, **extra: object) -> dict[str, object]:
    """The named parameters of a task row: its hot columns and its JSON body."""
    return {
        "job_id": task.job_id,
        "task_id": task.task_id,
        "status": task.status.value,
        "version": task.version,
        "not_before": task.not_before,
        "lease_expires_at": task.lease_expires_at,
        "body": encode_model(task),
        **extra,
    }


def _refuse(what: str, expected: int, found: tuple[int] | None) -> NoReturn:
    """Raise why a fenced write matched no row: the row is missing, or moved on."""
    if found is None:
        raise NotFoundError(f"{what} not found")
    raise ConflictError(f"{what}: expected version {expected}, current version is {found[0]}")


def open_sqlite_state(url_or_path: str) -> SqliteStateStore:
    """Open ``sqlite:///abs/path.db`` or a plain (relative or absolute) path.

    Query parameters: ``synchronous`` (off, normal, full, extra) and ``busy_timeout``
    (seconds). Raises ConfigError for another scheme, a host, or an unknown parameter.
    """
    text = url_or_path
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "sqlite":
            raise ConfigError(f"not a sqlite state URL: {url_or_path!r}")
        if not text.startswith("/"):
            raise ConfigError(f"use sqlite:///absolute/path.db, not {url_or_path!r}")
    path, _, query = text.partition("?")
    if not path:
        raise ConfigError(f"no path in state URL {url_or_path!r}")
    options: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        key, sep, value = pair.partition("=")
        if not sep or key not in {"synchronous", "busy_timeout"}:
            raise ConfigError(f"unknown sqlite state option {pair!r} in {url_or_path!r}")
        options[key] = value
    try:
        busy_timeout = float(options.get("busy_timeout", 60.0))
    except ValueError as exc:
        raise ConfigError(f"busy_timeout must be seconds, in {url_or_path!r}") from exc
    synchronous = options.get("synchronous", "NORMAL")
    return SqliteStateStore(Path(path), synchronous=synchronous, busy_timeout=busy_timeout)
