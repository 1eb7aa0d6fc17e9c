"""The detailed parts of `shardflow status`: task groups, slow and failing tasks, errors.

The summary reads counters only. These views read tasks through the state index
(bounded pages), so they stay fast on large jobs and say when they looked at a sample.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

from shardflow.models import Task, TaskStatus
from shardflow.statestore.base import StateStore

SCAN_LIMIT = 10_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(text: str | None, now: float) -> float | None:
    """``10m`` → the epoch time ten minutes before ``now``; None when not given."""
    if not text:
        return None
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"--since takes a duration like 30s, 10m, 2h or 1d, not {text!r}")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return now - float(match.group(1)) * unit


def tasks_in(
    state: StateStore, job_id: str, status: TaskStatus, *, limit: int, since: float | None
) -> list[Task]:
    out: list[Task] = []
    after: str | None = None
    scanned = 0
    while len(out) < limit and scanned < SCAN_LIMIT:
        page = state.list_tasks(job_id, status, limit=1000, after=after)
        scanned += len(page)
        out += [t for t in page if since is None or t.updated_at >= since]
        if len(page) < 1000:
            break
        after = page[-1].task_id
    return out[:limit]


def task_row(t: Task, now: float) -> dict[str, Any]:
    took = (t.finished_at or now) - t.started_at if t.started_at else None
    return {
        "task_id": t.task_id,
        "status": t.status.value,
        "attempt": t.attempt,
        "owner": t.lease_owner,
        "seconds": round(took, 3) if took is not None else None,
        "items": t.items_total,
        "error_class": t.error_class.value if t.error_class else None,
        "error": (t.error_message or "")[:300] or None,
        "updated_at": t.updated_at,
    }


def errors_by_class(
    state: StateStore, job_id: str, counters: dict[str, int]
) -> list[dict[str, Any]]:
    """Task failures (FAILED, RETRY_WAIT) and item failures (from the metric counters)."""
    tasks = state.list_tasks(job_id, TaskStatus.FAILED, limit=1000)
    tasks += state.list_tasks(job_id, TaskStatus.RETRY_WAIT, limit=1000)
    by_class: Counter[str] = Counter()
    sample: dict[str, str] = {}
    for t in tasks:
        cls = t.error_class.value if t.error_class else "unknown"
        by_class[cls] += 1
        sample.setdefault(cls, t.error_message or "")
    items = {
        name.removeprefix("metrics.errors."): n
        for name, n in counters.items()
        if name.startswith("metrics.errors.")
    }
    classes = sorted(set(by_class) | set(items), key=lambda c: -(by_class[c] + items.get(c, 0)))
    return [
        {
            "class": cls,
            "tasks": by_class[cls],
            "items": items.get(cls, 0),
            "sample": sample.get(cls, "")[:300] or None,
        }
        for cls in classes
    ]


def detail(state: StateStore, job_id: str, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    groups = [
        {
            "group": g.group_id,
            "round": g.round,
            "slots": g.slots,
            "executor": g.executor,
            "handles": list(g.handles),
            "slot_states": slurm_slot_states(g.handles) if g.executor == "slurm" else {},
        }
        for g in state.list_task_groups(job_id)
    ]
    done = tasks_in(state, job_id, TaskStatus.SUCCEEDED, limit=SCAN_LIMIT, since=None)
    slowest = sorted(
        (t for t in done if t.started_at and t.finished_at),
        key=lambda t: (t.finished_at or 0) - (t.started_at or 0),
        reverse=True,
    )[:5]
    failing = tasks_in(state, job_id, TaskStatus.FAILED, limit=10, since=None)
    failing += tasks_in(state, job_id, TaskStatus.RETRY_WAIT, limit=10, since=None)
    running = tasks_in(state, job_id, TaskStatus.LEASED, limit=20, since=None)
    return {
        "task_groups": groups,
        "running": [task_row(t, now) for t in running],
        "slowest": [task_row(t, now) for t in slowest],
        "slowest_sampled": len(done) >= SCAN_LIMIT,
        "failing": [task_row(t, now) for t in failing],
        "limits": rate_limits(state, job_id),
    }


def slurm_slot_states(handles: Any) -> dict[str, str]:
    """Each array element's state (``"123_4": "RUNNING"``); empty when Slurm is not there."""
    from pathlib import Path

    from shardflow.executors.slurm import SlurmExecutor, cluster_available

    if not handles or not cluster_available():
        return {}
    states = SlurmExecutor(Path(".shardflow")).slot_states(list(handles))
    return {k: v.value for k, v in states.items()}


def rate_limits(state: StateStore, job_id: str) -> list[dict[str, Any]]:
    try:
        from shardflow.ratelimit.control import limit_usage
    except ImportError:  # the rate limiter is optional
        return []
    import dataclasses

    return [dataclasses.asdict(u) for u in limit_usage(state, job_id)]


def complete_job_ids(ctx: Any, param: Any, incomplete: str) -> list[str]:
    """Shell completion: job ids from the local state store only (never a network call)."""
    import os
    from pathlib import Path

    url = os.environ.get("SHARDFLOW_STATE") or ".shardflow/state.db"
    path = Path(url.removeprefix("sqlite://")) if url.startswith(("sqlite://", "/", ".")) else None
    if path is None or not path.exists():
        return []
    from shardflow.statestore.sqlite import SqliteStateStore

    store = SqliteStateStore(path)
    try:
        return [j.job_id for j in store.list_jobs(200) if j.job_id.startswith(incomplete)]
    finally:
        store.close()
