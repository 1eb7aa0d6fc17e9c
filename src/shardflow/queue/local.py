"""The embedded queue: tables in a SQLite file (normally the state store's ``state.db``).

One file holds any number of queues (column ``queue``). The tables are this module's own
(``queue_messages``, ``queue_dead``), created on first use, so sharing the state store's
file needs no coordination with it. Every write is one ``BEGIN IMMEDIATE`` transaction,
which is what makes a receive atomic across processes: two receivers never get the same
message while it is hidden.

Limits are SQS's (:data:`MAX_DELAY_SECONDS`, :data:`MAX_VISIBILITY_SECONDS`,
:data:`MAX_WAIT_SECONDS`, :data:`MAX_BODY_BYTES`) so that code tested on the embedded queue
behaves the same on SQS; the ``check_*`` helpers are shared with :mod:`.memory`.
"""

from __future__ import annotations

import math
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from shardflow.errors import ConfigError
from shardflow.layout import validate_id
from shardflow.queue.base import SQS_MAX_DELAY_SECONDS, Message, QueueDepth

MAX_DELAY_SECONDS = SQS_MAX_DELAY_SECONDS
MAX_VISIBILITY_SECONDS = 43_200
MAX_WAIT_SECONDS = 20
MAX_BODY_BYTES = 262_144
BUSY_TIMEOUT_MS = 60_000
_POLL_FIRST, _POLL_CAP = 0.02, 0.25

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS queue_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        visible_at REAL NOT NULL,
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt TEXT,
        sent_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, visible_at, id)",
    "CREATE INDEX IF NOT EXISTS queue_messages_receipt ON queue_messages (receipt)",
    """CREATE TABLE IF NOT EXISTS queue_dead (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        message_id TEXT NOT NULL,
        body TEXT NOT NULL,
        receive_count INTEGER NOT NULL,
        dead_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS queue_dead_queue ON queue_dead (queue, id)",
)


def _check_seconds(what: str, value: float, limit: float) -> float:
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= limit:
        raise ValueError(f"{what} must be between 0 and {limit} seconds, got {value!r}")
    return float(value)


def check_delay(delay_seconds: float) -> float:
    """``delay_seconds`` as a float; ValueError outside ``[0, MAX_DELAY_SECONDS]``."""
    return _check_seconds("delay_seconds", delay_seconds, MAX_DELAY_SECONDS)


def check_visibility(visibility_timeout: float) -> float:
    """``visibility_timeout`` as a float; ValueError outside ``[0, MAX_VISIBILITY_SECONDS]``."""
    return _check_seconds("visibility_timeout", visibility_timeout, MAX_VISIBILITY_SECONDS)


def check_wait(wait_seconds: float) -> float:
    """``wait_seconds`` as a float; ValueError outside ``[0, MAX_WAIT_SECONDS]``."""
    return _check_seconds("wait_seconds", wait_seconds, MAX_WAIT_SECONDS)


def check_body(body: str) -> str:
    """``body`` if it is a str of at most :data:`MAX_BODY_BYTES` UTF-8 bytes, else ValueError."""
    if not isinstance(body, str):
        raise TypeError(f"a message body is a str (JSON made by the caller), got {type(body)}")
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise ValueError(f"message body larger than {MAX_BODY_BYTES} bytes")
    return body


def check_max_messages(max_messages: int) -> int:
    if not isinstance(max_messages, int) or max_messages < 1:
        raise ValueError(f"max_messages must be a positive int, got {max_messages!r}")
    return max_messages


def check_max_receives(max_receives: int) -> int:
    if not isinstance(max_receives, int) or max_receives < 1:
        raise ValueError(f"max_receives must be a positive int, got {max_receives!r}")
    return max_receives


def new_receipt() -> str:
    """A fresh, unguessable receipt: a stale holder can never forge the current one."""
    return secrets.token_hex(16)


def poll_until(
    deadline: float, attempt: Callable[[], list[Message]], sleep: Callable[[float], None]
) -> list[Message]:
    """Call ``attempt`` until it returns messages or ``time.monotonic()`` passes ``deadline``.

    Polling intervals grow from 20 ms to 250 ms: short enough that a long-poll answers
    promptly, long enough not to hammer the database while a queue sits empty.
    """
    interval = _POLL_FIRST
    while True:
        messages = attempt()
        remaining = deadline - time.monotonic()
        if messages or remaining <= 0:
            return messages
        sleep(min(interval, remaining))
        interval = min(interval * 2, _POLL_CAP)


class SqliteQueue:
    """A :class:`~shardflow.queue.base.Queue` stored in a SQLite file.

    Thread-safe (one connection per process, guarded by a lock) and safe across processes
    (SQLite locking; WAL mode). A forked child opens its own connection on first use.
    ``clock`` gives the time used for visibility and delays; it must be comparable across
    processes sharing the file (wall-clock time in production). ``synchronous`` is
    SQLite's (NORMAL by default, as for the state store in the same file: a commit
    survives a crash of any process; on power loss the last few may be lost, which
    reconcile repairs, since every task's truth is its row in the state store).
    """

    def __init__(
        self,
        path: Path,
        name: str,
        *,
        max_receives: int = 8,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
    ) -> None:
        self._name = validate_id(name, "queue name")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"unknown SQLite synchronous mode {synchronous!r}")
        self._synchronous = synchronous.upper()
        self._path = Path(path)
        self._max_receives = check_max_receives(max_receives)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        with self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> Path:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross a fork: the child would share the parent's locks.
        if self._conn is None or self._pid != os.getpid():
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")  # checked above
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close this process's connection; the queue reopens it if used again."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def send(self, body: str, *, delay_seconds: float = 0) -> str:
        """Enqueue ``body``; it becomes receivable after ``delay_seconds``. Returns its id."""
        check_body(body)
        delay = check_delay(delay_seconds)
        message_id = uuid.uuid4().hex
        with self._transaction() as conn:
            now = self._clock()
            conn.execute(
                "INSERT INTO queue_messages (queue, message_id, body, visible_at, sent_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (self._name, message_id, body, now + delay, now),
            )
        return message_id

    def send_many(self, bodies: Sequence[str], *, delay_seconds: float = 0) -> None:
        """Enqueue every body in one transaction: all are sent, or none."""
        for body in bodies:
            check_body(body)
        delay = check_delay(delay_seconds)
        with self._transaction() as conn:
            now = self._clock()
            conn.executemany(
                "INSERT INTO queue_messages (queue, message_id, body, visible_at, sent_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(self._name, uuid.uuid4().hex, b, now + delay, now) for b in bodies],
            )

    def receive(
        self, *, max_messages: int = 1, visibility_timeout: float = 60, wait_seconds: float = 0
    ) -> list[Message]:
        """Up to ``max_messages`` visible messages, oldest visible first, each hidden for
        ``visibility_timeout`` seconds under a fresh receipt.

        A message that has already been delivered ``max_receives`` times moves to the
        dead letters instead. With ``wait_seconds`` the call blocks (real time) until a
        message is delivered or the wait ends, and may return an empty list.
        """
        check_max_messages(max_messages)
        visibility = check_visibility(visibility_timeout)
        wait = check_wait(wait_seconds)

        def attempt() -> list[Message]:
            return self._receive_once(max_messages, visibility)

        if wait == 0:
            return attempt()
        return poll_until(time.monotonic() + wait, attempt, time.sleep)

    def _receive_once(self, max_messages: int, visibility: float) -> list[Message]:
        delivered: list[Message] = []
        delivered_ids: set[int] = set()
        with self._transaction() as conn:
            now = self._clock()
            while len(delivered) < max_messages:
                # With visibility 0 a delivered row stays visible, so ask for enough rows
                # to see past the ones already delivered by this call.
                need = max_messages - len(delivered)
                rows = conn.execute(
                    "SELECT id, message_id, body, receive_count FROM queue_messages"
                    " WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?",
                    (self._name, now, need + len(delivered_ids)),
                ).fetchall()
                fresh = [r for r in rows if r[0] not in delivered_ids]
                if not fresh:
                    break
                for row_id, message_id, body, count in fresh[:need]:
                    if count + 1 > self._max_receives:
                        self._move_to_dead(conn, row_id, message_id, body, count, now)
                        continue
                    receipt = new_receipt()
                    conn.execute(
                        "UPDATE queue_messages SET visible_at = ?, receive_count = ?,"
                        " receipt = ? WHERE id = ?",
                        (now + visibility, count + 1, receipt, row_id),
                    )
                    delivered_ids.add(row_id)
                    delivered.append(Message(message_id, body, receipt, count + 1))
        return delivered

    def _move_to_dead(
        self,
        conn: sqlite3.Connection,
        row_id: int,
        message_id: str,
        body: str,
        count: int,
        now: float,
    ) -> None:
        conn.execute(
            "INSERT INTO queue_dead (queue, message_id, body, receive_count, dead_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (self._name, message_id, body, count, now),
        )
        conn.execute("DELETE FROM queue_messages WHERE id = ?", (row_id,))

    def extend(self, receipt: str, visibility_timeout: float) -> bool:
        """Hide the message for ``visibility_timeout`` more seconds from now.

        False when ``receipt`` is not the message's current receipt (it was received
        again, or deleted).
        """
        visibility = check_visibility(visibility_timeout)
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                (self._clock() + visibility, self._name, receipt),
            )
            return cursor.rowcount == 1

    def delete(self, receipt: str) -> bool:
        """Remove the message; False when ``receipt`` is not its current receipt."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM queue_messages WHERE queue = ? AND receipt = ?",
                (self._name, receipt),
            )
            return cursor.rowcount == 1

    def delete_many(self, receipts: Sequence[str]) -> int:
        """Remove the messages of ``receipts`` in one transaction; return how many were
        current."""
        if not receipts:
            return 0
        with self._transaction() as conn:
            cursor = conn.executemany(
                "DELETE FROM queue_messages WHERE queue = ? AND receipt = ?",
                [(self._name, r) for r in receipts],
            )
            return cursor.rowcount

    def depth(self) -> QueueDepth:
        """Counts now: visible, in flight (received and hidden), delayed (never received)."""
        with self._lock:
            row = (
                self._connection()
                .execute(
                    "SELECT COALESCE(SUM(visible_at <= :now), 0),"
                    " COALESCE(SUM(visible_at > :now AND receive_count > 0), 0),"
                    " COALESCE(SUM(visible_at > :now AND receive_count = 0), 0)"
                    " FROM queue_messages WHERE queue = :queue",
                    {"now": self._clock(), "queue": self._name},
                )
                .fetchone()
            )
        return QueueDepth(visible=row[0], in_flight=row[1], delayed=row[2])

    def is_empty(self) -> bool:
        with self._lock:
            row = (
                self._connection()
                .execute("SELECT 1 FROM queue_messages WHERE queue = ? LIMIT 1", (self._name,))
                .fetchone()
            )
        return row is None

    def dead_letters(self, limit: int = 100) -> list[Message]:
        """Up to ``limit`` dead letters, oldest first. Their receipt is empty: a dead
        letter cannot be extended or deleted, only purged."""
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT message_id, body, receive_count FROM queue_dead"
                    " WHERE queue = ? ORDER BY id LIMIT ?",
                    (self._name, max(0, int(limit))),
                )
                .fetchall()
            )
        return [Message(message_id, body, "", count) for message_id, body, count in rows]

    def purge(self) -> None:
        """Remove every message of this queue, dead letters included."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM queue_messages WHERE queue = ?", (self._name,))
            conn.execute("DELETE FROM queue_dead WHERE queue = ?", (self._name,))


def sqlite_path(state_url_or_path: str) -> Path:
    """The file named by ``sqlite:///abs/path.db`` or by a plain path.

    Raises :class:`ConfigError` for another scheme or a ``sqlite://`` URL with a host.
    """
    if "://" not in state_url_or_path:
        if not state_url_or_path:
            raise ConfigError("an empty SQLite path")
        return Path(state_url_or_path)
    parsed = urlparse(state_url_or_path)
    if parsed.scheme != "sqlite" or parsed.netloc or not parsed.path.startswith("/"):
        raise ConfigError(
            f"not a SQLite location: {state_url_or_path!r} (use sqlite:///abs/path.db or a path)"
        )
    return Path(unquote(parsed.path))


def open_local_queue(
    state_url_or_path: str,
    name: str,
    *,
    max_receives: int = 8,
    clock: Callable[[], float] = time.time,
) -> SqliteQueue:
    """A :class:`SqliteQueue` named ``name`` in the SQLite file ``state_url_or_path``
    (``sqlite:///abs/path.db`` or a path); a ``synchronous`` option in the URL's query
    applies to the queue too. Raises :class:`ConfigError` for another URL."""
    path, _, query = state_url_or_path.partition("?")
    synchronous = "NORMAL"
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        if key == "synchronous":
            synchronous = value
    return SqliteQueue(
        sqlite_path(path), name, max_receives=max_receives, clock=clock, synchronous=synchronous
    )
