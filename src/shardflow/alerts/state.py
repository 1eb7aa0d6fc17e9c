"""What the watcher remembers between passes: open alerts and each job's recent counters.

A small JSON file (``alerts-state.json`` in the workspace by default), written
atomically and locked for the length of a pass (``fcntl.flock`` on a ``.lock`` file
beside it), so a loop and a ``--once`` from the Slurm reconcile chain can share it.

- ``open``: per condition key, when it was first seen, the condition as last seen,
  and per channel when it was last delivered. Suppression and resolve read this.
- ``history``: per job, snapshots of its counters from recent passes (at most
  :data:`MAX_SNAPSHOTS`, none older than :data:`KEEP_SECONDS`), which the stall,
  error-rate and wait-time rules compare against. Jobs no longer watched are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shardflow.alerts.rules import Condition, Snapshot

log = logging.getLogger("shardflow.alerts")

MAX_SNAPSHOTS = 240
KEEP_SECONDS = 6 * 3600.0
VERSION = 1


@dataclass
class OpenAlert:
    first_seen: float
    condition: Condition
    sent: dict[str, float] = field(default_factory=dict)  # channel name → last delivery


@dataclass
class AlertState:
    open: dict[str, OpenAlert] = field(default_factory=dict)
    history: dict[str, list[Snapshot]] = field(default_factory=dict)

    def record(self, job_id: str, snap: Snapshot) -> None:
        """Append a pass's snapshot, trimming by age and count."""
        snaps = [s for s in self.history.get(job_id, []) if snap.at - s.at <= KEEP_SECONDS]
        snaps.append(snap)
        self.history[job_id] = snaps[-MAX_SNAPSHOTS:]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": VERSION,
                "open": {
                    key: {
                        "first_seen": a.first_seen,
                        "sent": a.sent,
                        "condition": dataclasses.asdict(a.condition),
                    }
                    for key, a in self.open.items()
                },
                "history": {
                    job: [dataclasses.astuple(s) for s in snaps]
                    for job, snaps in self.history.items()
                },
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_json(cls, data: bytes) -> AlertState:
        """Parse a state file; ValueError (with what is wrong) for any malformed part."""
        raw: Any = orjson.loads(data)
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            raise ValueError("not an alert state file of version 1")
        state = cls()
        for key, item in (raw.get("open") or {}).items():
            cond = Condition(**item["condition"])
            sent = {str(k): float(v) for k, v in item.get("sent", {}).items()}
            state.open[str(key)] = OpenAlert(float(item["first_seen"]), cond, sent)
        for job, snaps in (raw.get("history") or {}).items():
            state.history[str(job)] = [Snapshot(*s) for s in snaps]
        return state


def load_state(path: Path) -> AlertState:
    """The saved state, or a fresh one if there is none. A corrupt file is moved aside
    (``.corrupt``) with a warning and replaced: open alerts may then be sent again,
    which beats never alerting."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return AlertState()
    try:
        return AlertState.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning("alert state %s was unreadable (%s); moved to %s", path, exc, aside)
        return AlertState()


def save_state(path: Path, state: AlertState) -> None:
    """Write atomically: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (blocking) for the length of a pass."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
