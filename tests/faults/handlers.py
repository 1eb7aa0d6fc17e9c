"""Handlers for the fault suite (imported by file from job configs, in worker processes).

Every handler here returns what :func:`enrich` returns for the items it does not sabotage,
so a faulty run can be compared row for row with a clean run of :func:`enrich`.
Which items are sabotaged comes from the environment, which worker slots inherit from
``shardflow run``.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

_SLEEP = float(os.environ.get("FAULT_ITEM_SLEEP", "0") or 0)
# ids of the sabotaged items (one per scenario; the synthetic ids look like u0000123)
HANG_ID = os.environ.get("FAULT_HANG_ID", "u0000123")
SEGV_ID = os.environ.get("FAULT_SEGV_ID", "u0000123")
_seen: set[str] = set()


def refused(record: dict[str, Any]) -> bool:
    """The items :func:`enrich` refuses (a permanent error): a deterministic ~1.4%."""
    return bool(record.get("age") == 42)


def enrich(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    if _SLEEP:
        time.sleep(_SLEEP)
    if refused(record):
        raise ValueError(f"age 42 is not allowed for {record['id']}")
    return {
        "id": record["id"],
        "digest": hashlib.sha256(str(record["email"]).encode()).hexdigest()[:16],
        "name_len": len(record["name"]),
        "score": record["score"],
    }


def is_flaky(key: str) -> bool:
    """Items whose first call fails with a transient error (1 in 400)."""
    return int(key[1:]) % 400 == 7


def flaky(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """A transient error (a dropped connection) the first time this process sees an item;
    the in-place retry of the same item then succeeds."""
    key = str(record["id"])
    if is_flaky(key) and key not in _seen:
        _seen.add(key)
        raise ConnectionResetError(f"connection reset while enriching {key}")
    return enrich(record, ctx)


def hang(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Hangs for 30 s on one item (longer than any item timeout the tests set)."""
    if record["id"] == HANG_ID:
        time.sleep(30)
    return enrich(record, ctx)


def segfault(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Crashes the process running it (SIGSEGV) on one item."""
    if record["id"] == SEGV_ID:
        import ctypes

        ctypes.string_at(0)
    return enrich(record, ctx)


def limited(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Takes a token of the job's ``api`` rate limit before each item."""
    ctx.acquire("api")
    return enrich(record, ctx)
