"""What the jobs list and a job's page show, as plain data built from the stores.

Reads are bounded so a page stays fast on a job of any size: counters for every count,
a page of at most 1,000 tasks per error state, the last 200 events, and the cached
:class:`~shardflow.dashboard.scan.JobScan` for charts and slowest tasks. Item failure
samples come from the final ``output/failures.parquet`` (its first rows only).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shardflow.cli.common import job_summary
from shardflow.cli.status_views import errors_by_class, task_row
from shardflow.coordinator.retry import FailureThreshold
from shardflow.dashboard import charts
from shardflow.dashboard.scan import JobScan
from shardflow.layout import Layout
from shardflow.models import Job, JobStatus, TaskStatus
from shardflow.statestore.base import StateStore

if TYPE_CHECKING:
    from shardflow.objectstore.base import ObjectStore

JOB_SORTS = ("created", "name", "status", "progress")
SAMPLE_ROWS = 2000
SAMPLES_PER_GROUP = 3
MAX_FAILURES_BYTES = 64 << 20
EVENTS_SHOWN = 200

# job counters ``metrics.<key>`` shown on the job page: key → (label, kind)
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("wall_ms", "Wall time of committed attempts", "ms"),
    ("cpu_ms", "CPU time", "ms"),
    ("bytes_read", "Bytes read", "bytes"),
    ("bytes_written", "Bytes written", "bytes"),
    ("api_calls", "API calls", "count"),
    ("api_ms", "Time in API calls", "ms"),
    ("tokens", "Rate-limit tokens used", "count"),
    ("ratelimit_wait_ms", "Time waiting for tokens", "ms"),
)


def _progress(summary: dict[str, Any]) -> float:
    items = summary["items"]
    if items["total"]:
        return min(1.0, float(items["succeeded"] + items["failed"]) / float(items["total"]))
    tasks = summary["tasks"]
    done = float(tasks["SUCCEEDED"] + tasks["FAILED"] + tasks["CANCELLED"])
    return done / tasks["total"] if tasks["total"] else 0.0


def jobs_rows(
    state: StateStore,
    *,
    now: float,
    status: str | None = None,
    q: str | None = None,
    sort: str = "created",
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The most recent ``limit`` jobs (one counter read each), filtered by status and
    by a case-insensitive substring of name or id, sorted by ``sort`` (a JOB_SORTS key;
    unknown keys sort by creation, newest first)."""
    rows = []
    needle = (q or "").strip().lower()
    for job in state.list_jobs(limit):
        if status and job.status.value != status:
            continue
        if needle and needle not in job.name.lower() and needle not in job.job_id:
            continue
        summary = job_summary(state, job, now)
        summary["progress"] = _progress(summary)
        rows.append(summary)
    if sort == "name":
        rows.sort(key=lambda r: (r["name"].lower(), r["job_id"]))
    elif sort == "status":
        rows.sort(key=lambda r: (r["status"], -r["created_at"]))
    elif sort == "progress":
        rows.sort(key=lambda r: (r["progress"], -r["created_at"]))
    return rows


def _metric_rows(counters: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for key, label, kind in METRIC_ROWS:
        value = counters.get(f"metrics.{key}")
        if value:
            rows.append({"label": label, "kind": kind, "value": value})
    for name in sorted(counters):
        if name.startswith("metrics.user."):
            label = f"handler metric {name.removeprefix('metrics.user.')}"
            rows.append({"label": label, "kind": "count", "value": counters[name]})
    return rows


def _charts(job: Job, scan: JobScan | None, now: float, events: list[dict[str, Any]]) -> Any:
    if scan is None:
        return None
    start = job.created_at
    end = job.updated_at if job.status.is_final else now
    if scan.finished:
        end = max(end, scan.finished[-1][0])
    marks = [(e["at"], e["kind"]) for e in events if e["kind"] not in ("submitted", "finished")]
    return {
        "progress": charts.progress_chart(
            scan.finished, start=start, end=end, total_items=job.total_items, events=marks
        ),
        "throughput": charts.throughput_chart(scan.finished, start=start, end=end),
    }


def job_page(
    state: StateStore,
    job: Job,
    *,
    now: float,
    scan: JobScan | None,
    item_failures: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Everything the job page shows (see the module docstring for what each costs)."""
    counters = state.read_counters(job.job_id)
    summary = job_summary(state, job, now)
    summary["progress"] = _progress(summary)
    items = summary["items"]
    left = items["total"] - items["succeeded"] - items["failed"]
    rate = summary["items_per_second"]
    summary["eta_seconds"] = (
        left / rate if rate and left > 0 and not job.status.is_final and not job.paused else None
    )
    events = [
        {"at": e.at, "kind": e.kind, "actor": e.actor, "detail": dict(e.detail)}
        for e in state.list_events(job.job_id, limit=EVENTS_SHOWN)
    ]
    groups = [
        {
            "group": g.group_id,
            "round": g.round,
            "slots": g.slots,
            "executor": g.executor,
            "handles": list(g.handles),
            "created_at": g.created_at,
        }
        for g in state.list_task_groups(job.job_id)
    ]
    cfg = job.config.get("config") or {}
    retry_cfg = cfg.get("retry") or {}
    tolerated = FailureThreshold.of(
        retry_cfg.get("tolerated_failure_percent"), retry_cfg.get("tolerated_failure_count")
    ).describe()
    return {
        "job": job,
        "summary": summary,
        "task_counts": [(s.value, int(counters.get(f"tasks.{s.value}", 0))) for s in TaskStatus],
        "errors": errors_by_class(state, job.job_id, counters),
        "item_failures": item_failures,
        "tolerated": tolerated,
        "failed_percent": 100.0 * items["failed"] / items["total"] if items["total"] else 0.0,
        "charts": _charts(job, scan, now, events),
        "scan": scan,
        "slowest": [task_row(t, now) for t in scan.slowest] if scan else None,
        "limits": rate_limit_rows(state, job.job_id, now),
        "groups": groups,
        "slots_total": sum(g["slots"] for g in groups),
        "events": list(reversed(events)),
        "metrics": _metric_rows(counters),
        "executor": str((cfg.get("backends") or {}).get("executor", "")),
        "can_pause": not job.status.is_final and not job.paused,
        "can_resume": not job.status.is_final and job.paused,
        "can_retry": job.status is not JobStatus.CANCELLED and counters.get("tasks.FAILED", 0) > 0,
        "can_cancel": not job.status.is_final,
    }


def rate_limit_rows(state: StateStore, job_id: str, now: float) -> list[dict[str, Any]]:
    """Each configured limit's bucket, or [] when the rate limiter is not installed."""
    try:
        from shardflow.ratelimit.control import limit_usage
    except ImportError:  # the rate limiter is optional
        return []
    rows = []
    for usage in limit_usage(state, job_id, now=now):
        row = dataclasses.asdict(usage)
        row["used"] = 1.0 - usage.tokens / usage.burst if usage.burst else 0.0
        rows.append(row)
    return rows


class ItemFailureCache:
    """Samples of a finished job's item failures, read once per job version."""

    def __init__(self, open_store: Callable[[Job], ObjectStore | None]) -> None:
        self._open_store = open_store
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, list[dict[str, Any]] | None]] = {}

    def get(self, job: Job) -> list[dict[str, Any]] | None:
        """Failure groups (class, exception, count in the sample, samples), or None when
        the job has no final output yet (or it cannot be read from here)."""
        if job.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return None
        with self._lock:
            hit = self._cache.get(job.job_id)
        if hit is not None and hit[0] == job.version:
            return hit[1]
        store = self._open_store(job)
        groups = read_item_failures(store, job.job_id) if store is not None else None
        with self._lock:
            self._cache[job.job_id] = (job.version, groups)
        return groups


def read_item_failures(store: ObjectStore, job_id: str) -> list[dict[str, Any]] | None:
    """Group the first :data:`SAMPLE_ROWS` rows of ``output/failures.parquet`` by error
    class and exception, with a few samples each; None if the file is not there."""
    import io

    import pyarrow.parquet as pq

    key = Layout(job_id).output("failures", "parquet")
    info = store.head(key)
    if info is None:
        return None
    if info.size > MAX_FAILURES_BYTES and store.local_path(key) is None:
        return []  # too large to fetch for a sample; the counts come from the counters
    local = store.local_path(key)
    source: Any = str(local) if local is not None else io.BytesIO(store.get_bytes(key))
    columns = ["key", "error_class", "exception", "message", "task_id", "line"]
    parquet = pq.ParquetFile(source)
    names = set(parquet.schema_arrow.names)
    counts: Counter[tuple[str, str]] = Counter()
    samples: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    read = 0
    for batch in parquet.iter_batches(batch_size=500, columns=[c for c in columns if c in names]):
        for row in batch.to_pylist():
            group = (str(row.get("error_class") or "unknown"), str(row.get("exception") or ""))
            counts[group] += 1
            if len(samples[group]) < SAMPLES_PER_GROUP:
                samples[group].append(row)
        read += batch.num_rows
        if read >= SAMPLE_ROWS:
            break
    return [
        {"class": cls, "exception": exc, "count": n, "samples": samples[(cls, exc)]}
        for (cls, exc), n in counts.most_common()
    ]
