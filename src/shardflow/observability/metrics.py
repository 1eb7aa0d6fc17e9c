"""Prometheus text exposition (format 0.0.4) of job state, read from the stores.

Everything here is derived from what the state store already keeps compactly: the job
row, its sharded counters (``tasks.<STATUS>``, ``items.*``, ``rows``, ``attempts`` and
the per-job metric sums ``metrics.<name>`` that workers add at commit) and, when the job
configures rate limits, its token buckets. Nothing scans tasks, so a scrape costs a few
reads per job whatever the job's size. The same text serves the dashboard's ``/metrics``
endpoint and :func:`write_textfile`, which node exporters pick up on HPC nodes.

Series per job carry a ``job_id`` label; ``shardflow_job_info`` also carries the job's
name. Counter values in milliseconds are exported in seconds (``*_seconds_total``).
Label values are escaped as the format requires, so a job named ``a"b\\n`` cannot
break the exposition.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shardflow.models import Job, JobStatus, TaskStatus
from shardflow.statestore.base import StateStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# counter ``metrics.<key>`` → (family, help, divisor): milliseconds become seconds
_METRIC_FAMILIES: Mapping[str, tuple[str, str, float]] = {
    "wall_ms": ("shardflow_job_wall_seconds_total", "Wall time of committed attempts.", 1000.0),
    "cpu_ms": ("shardflow_job_cpu_seconds_total", "CPU time of committed attempts.", 1000.0),
    "bytes_read": ("shardflow_job_bytes_read_total", "Bytes read by committed attempts.", 1.0),
    "bytes_written": (
        "shardflow_job_bytes_written_total",
        "Bytes written by committed attempts.",
        1.0,
    ),
    "api_calls": ("shardflow_job_api_calls_total", "API calls made through ctx.", 1.0),
    "api_ms": ("shardflow_job_api_seconds_total", "Time spent in API calls made through ctx.", 1e3),
    "ratelimit_wait_ms": (
        "shardflow_job_ratelimit_wait_seconds_total",
        "Time spent waiting for rate-limit tokens.",
        1000.0,
    ),
    "tokens": ("shardflow_job_ratelimit_tokens_total", "Rate-limit tokens used.", 1.0),
    "items": ("shardflow_job_items_processed_total", "Items run through the handler.", 1.0),
}


@dataclass
class _Family:
    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


class _Exposition:
    """Families in first-use order; each is written once with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def add(self, name: str, kind: str, help_: str, labels: dict[str, str], value: float) -> None:
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = _Family(name, kind, help_)
        family.samples.append((labels, value))

    def text(self) -> str:
        out: list[str] = []
        for family in self.families.values():
            out.append(f"# HELP {family.name} {_escape_help(family.help)}")
            out.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in family.samples:
                out.append(f"{family.name}{_labels(labels)} {_number(value)}")
        return "\n".join(out) + "\n" if out else ""


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _job_families(exp: _Exposition, job: Job, counters: Mapping[str, int]) -> None:
    jid = {"job_id": job.job_id}
    exp.add(
        "shardflow_job_info",
        "gauge",
        "A job known to the state store (always 1); labels name it.",
        {
            **jid,
            "name": job.name,
            "executor": str(job.config.get("config", {}).get("backends", {}).get("executor", "")),
        },
        1,
    )
    for status in JobStatus:
        exp.add(
            "shardflow_job_status",
            "gauge",
            "1 for the job's current status, 0 for the others.",
            {**jid, "status": status.value},
            1 if job.status is status else 0,
        )
    exp.add("shardflow_job_paused", "gauge", "1 while the job is paused.", jid, int(job.paused))
    exp.add(
        "shardflow_job_created_timestamp_seconds",
        "gauge",
        "When the job was submitted.",
        jid,
        job.created_at,
    )
    exp.add(
        "shardflow_job_updated_timestamp_seconds",
        "gauge",
        "When the job row last changed.",
        jid,
        job.updated_at,
    )
    exp.add("shardflow_job_tasks_expected", "gauge", "Tasks the job has.", jid, job.total_tasks)
    exp.add("shardflow_job_items_expected", "gauge", "Input items.", jid, job.total_items)
    for task_status in TaskStatus:
        exp.add(
            "shardflow_job_tasks",
            "gauge",
            "Tasks by state.",
            {**jid, "state": task_status.value},
            int(counters.get(f"tasks.{task_status.value}", 0)),
        )
    split = job.config.get("split") or {}
    rejected = int(split.get("rejected", 0)) + int(counters.get("items.rejected", 0))
    for outcome, value in (
        ("succeeded", int(counters.get("items.succeeded", 0))),
        ("failed", int(counters.get("items.failed", 0))),
        ("rejected", rejected),
    ):
        exp.add(
            "shardflow_job_items_total",
            "counter",
            "Items by final outcome.",
            {**jid, "outcome": outcome},
            value,
        )
    rows = int(counters.get("rows", 0))
    exp.add("shardflow_job_rows_total", "counter", "Result rows committed.", jid, rows)
    exp.add(
        "shardflow_job_attempts_total",
        "counter",
        "Task attempts started (leases taken).",
        jid,
        int(counters.get("attempts", 0)),
    )
    _metric_counter_families(exp, jid, counters)


def _metric_counter_families(
    exp: _Exposition, jid: dict[str, str], counters: Mapping[str, int]
) -> None:
    for name in sorted(counters):
        if not name.startswith("metrics."):
            continue
        key, value = name.removeprefix("metrics."), counters[name]
        if key in _METRIC_FAMILIES:
            family, help_, divisor = _METRIC_FAMILIES[key]
            exp.add(family, "counter", help_, jid, value / divisor)
        elif key.startswith("errors."):
            exp.add(
                "shardflow_job_item_errors_total",
                "counter",
                "Item failures by error class.",
                {**jid, "class": key.removeprefix("errors.")},
                value,
            )
        elif key.startswith("user."):
            exp.add(
                "shardflow_job_user_metric_total",
                "counter",
                "Sums of handler metrics reported through ctx.metric().",
                {**jid, "metric": key.removeprefix("user.")},
                value,
            )
        else:
            exp.add(
                "shardflow_job_metric_total",
                "counter",
                "Other per-job metric sums kept by the workers.",
                {**jid, "metric": key},
                value,
            )


def _limit_families(exp: _Exposition, state: StateStore, job: Job) -> None:
    if not (job.config.get("config", {}).get("rate_limits") or {}):
        return
    try:
        from shardflow.ratelimit.control import limit_usage
    except ImportError:  # the rate limiter is optional
        return
    for usage in limit_usage(state, job.job_id):
        labels = {"job_id": job.job_id, "limit": usage.name}
        exp.add("shardflow_ratelimit_rate", "gauge", "Tokens per second.", labels, usage.rate)
        exp.add("shardflow_ratelimit_burst", "gauge", "Bucket capacity.", labels, usage.burst)
        exp.add(
            "shardflow_ratelimit_tokens", "gauge", "Tokens in the bucket.", labels, usage.tokens
        )
        exp.add(
            "shardflow_ratelimit_leased_tokens",
            "gauge",
            "Tokens held by workers in leased blocks.",
            labels,
            usage.leased,
        )
        exp.add(
            "shardflow_ratelimit_waiting_workers",
            "gauge",
            "Workers waiting more than a second for tokens.",
            labels,
            usage.waiting_workers,
        )
        paused = int(usage.paused)
        exp.add(
            "shardflow_ratelimit_paused", "gauge", "1 while issuance is paused.", labels, paused
        )


def render_prometheus(
    state: StateStore, *, job_ids: Sequence[str] | None = None, limit: int = 50
) -> str:
    """The exposition for ``job_ids`` (each must exist; unknown ids are skipped) or, by
    default, the ``limit`` most recently created jobs. A few store reads per job."""
    jobs: Iterable[Job]
    if job_ids is None:
        jobs = state.list_jobs(limit)
    else:
        jobs = [j for j in (state.get_job(i) for i in job_ids) if j is not None]
    exp = _Exposition()
    count = 0
    for job in jobs:
        _job_families(exp, job, state.read_counters(job.job_id))
        _limit_families(exp, state, job)
        count += 1
    exp.add("shardflow_exporter_jobs", "gauge", "Jobs in this exposition.", {}, count)
    return exp.text()


def write_textfile(
    path: Path, state: StateStore, *, job_ids: Sequence[str] | None = None, limit: int = 50
) -> int:
    """Write :func:`render_prometheus` to ``path`` for a node exporter's textfile
    collector, atomically (a temp file in the same folder, fsynced, then renamed), so the
    collector never reads half a file. Returns the bytes written; OSError propagates."""
    data = render_prometheus(state, job_ids=job_ids, limit=limit).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # the collector usually runs as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)
