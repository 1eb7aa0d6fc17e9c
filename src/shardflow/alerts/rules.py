"""Alert rules: pure functions from what was observed to the conditions that hold now.

A :class:`Condition` names its rule, the job (or host) it is about, a severity, one
line saying what is wrong, when it started, and what to do. Rules see a
:class:`JobFacts` (the job, its counters, its rate limits, a bounded sample of its
infrastructure-failed tasks) and the job's recent :class:`Snapshot` history kept by the
watcher between passes, so "no progress for 20 minutes" and "error rate over the last
15 minutes" need no server. Rules never read a store or the clock themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shardflow.alerts.config import Rules
from shardflow.coordinator.retry import FailureThreshold
from shardflow.models import Job, JobStatus

CRITICAL, ERROR, WARNING = "critical", "error", "warning"


@dataclass(frozen=True, slots=True)
class Condition:
    rule: str
    subject: str  # a job id, or "host:<name>" for machine rules
    severity: str
    what: str
    action: str
    since: float | None = None  # when it began, if the rule knows; else first seen
    job_name: str | None = None
    repeat: bool = True  # False: say it once (a job that failed stays failed)
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable across passes: the suppression key and PagerDuty's dedup_key."""
        return f"{self.rule}/{self.subject}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A job's progress-relevant counters at one pass."""

    at: float
    done: int  # items finished (succeeded + failed) + tasks final
    succeeded: int
    failed: int
    infra_items: int
    wait_ms: int
    wall_ms: int

    @classmethod
    def of(cls, at: float, counters: Mapping[str, int]) -> Snapshot:
        c = counters
        final = sum(int(c.get(f"tasks.{s}", 0)) for s in ("SUCCEEDED", "FAILED", "CANCELLED"))
        ok, bad = int(c.get("items.succeeded", 0)), int(c.get("items.failed", 0))
        return cls(
            at,
            ok + bad + final,
            ok,
            bad,
            int(c.get("metrics.errors.infrastructure", 0)),
            int(c.get("metrics.ratelimit_wait_ms", 0)),
            int(c.get("metrics.wall_ms", 0)),
        )


@dataclass(frozen=True, slots=True)
class JobFacts:
    job: Job
    counters: Mapping[str, int]
    now: float
    limits: Sequence[Mapping[str, Any]] = ()  # LimitUsage as dicts
    infra_tasks: int = 0  # RETRY_WAIT/FAILED tasks with error class infrastructure (sampled)
    infra_sample: str | None = None


@dataclass(frozen=True, slots=True)
class HostFacts:
    host: str
    path: str
    disk_total: int
    disk_free: int
    mem_total: int | None
    mem_available: int | None


def _baseline(history: Sequence[Snapshot], now: float, window: float) -> Snapshot | None:
    """The oldest snapshot inside ``window`` (the start of the rate's interval)."""
    inside = [s for s in history if now - s.at <= window]
    return inside[0] if inside else None


def _stalled_since(history: Sequence[Snapshot], current: Snapshot) -> float:
    """When ``done`` last changed (the earliest snapshot with today's value)."""
    since = current.at
    for snap in reversed(history):
        if snap.done != current.done:
            break
        since = snap.at
    return since


def _cmd(job: Job) -> str:
    return f"shardflow status {job.job_id} --detail"


def _about(job: Job, rule: str, severity: str, what: str, action: str, **kw: Any) -> Condition:
    return Condition(rule, job.job_id, severity, what, action, job_name=job.name, **kw)


def _job_failed(facts: JobFacts, rules: Rules) -> Condition | None:
    job, r = facts.job, rules.job_failed
    if not r.enabled or facts.now - job.updated_at > r.recent:
        return None
    action = (
        f"look at the errors (`{_cmd(job)}`), fix the cause, then `shardflow retry {job.job_id}`"
    )
    what = f"job failed: {job.message or 'see its errors'}"
    return _about(job, "job_failed", CRITICAL, what, action, since=job.updated_at, repeat=False)


def _stalled(
    facts: JobFacts, history: Sequence[Snapshot], current: Snapshot, rules: Rules
) -> Condition | None:
    job, r = facts.job, rules.stalled
    if not r.enabled or job.paused or not history:
        return None
    since = _stalled_since(history, current)
    if facts.now - since < r.after:
        return None
    leased = int(facts.counters.get("tasks.LEASED", 0))
    what = (
        f"no progress for {int((facts.now - since) // 60)} min: "
        f"{current.succeeded + current.failed:,} of {job.total_items:,} items done, "
        f"{leased} task(s) leased"
    )
    action = (
        f"check the slots and running tasks (`{_cmd(job)}`); if the slots are gone, "
        f"`shardflow recover {job.job_id}`"
    )
    return _about(
        job, "stalled", CRITICAL, what, action, since=since, details={"done": current.done}
    )


def _error_rate(
    facts: JobFacts, history: Sequence[Snapshot], current: Snapshot, rules: Rules
) -> Condition | None:
    job, r = facts.job, rules.error_rate
    base = _baseline(history, facts.now, r.window)
    if not r.enabled or base is None:
        return None
    finished = (current.succeeded + current.failed) - (base.succeeded + base.failed)
    failed = current.failed - base.failed
    if finished < r.min_items or 100.0 * failed / finished <= r.above_percent:
        return None
    pct = 100.0 * failed / finished
    what = (
        f"{pct:.1f}% of items failed in the last {int((facts.now - base.at) // 60)} min "
        f"({failed:,} of {finished:,}; threshold {r.above_percent}%)"
    )
    action = (
        f"see the errors by class (`{_cmd(job)}`); pause the job "
        f"(`shardflow pause {job.job_id}`) if a dependency is down"
    )
    return _about(job, "error_rate", ERROR, what, action, details={"percent": round(pct, 2)})


def _failure_budget(facts: JobFacts, current: Snapshot, rules: Rules) -> Condition | None:
    job, r = facts.job, rules.failures_near_limit
    retry_cfg = (job.config.get("config") or {}).get("retry") or {}
    tolerated = FailureThreshold.of(
        retry_cfg.get("tolerated_failure_percent"), retry_cfg.get("tolerated_failure_count")
    )
    if not r.enabled or not job.total_items or not current.failed:
        return None
    if tolerated.used(current.failed, job.total_items) < r.at_fraction:
        return None
    pct = 100.0 * current.failed / job.total_items
    what = (
        f"{pct:.2f}% of items failed; the job fails above {tolerated.describe()} "
        f"({current.failed:,} of {job.total_items:,} items)"
    )
    action = (
        "find the failing input or dependency before the job fails "
        f"(`{_cmd(job)}`); raise retry.tolerated_failure_percent (or _count) only if expected"
    )
    details = {"percent": round(pct, 3)}
    return _about(job, "failures_near_limit", ERROR, what, action, details=details)


def _rate_limited(
    facts: JobFacts, history: Sequence[Snapshot], current: Snapshot, rules: Rules
) -> Condition | None:
    job, r = facts.job, rules.rate_limit_saturated
    if not r.enabled:
        return None
    saturated = []
    for lim in facts.limits:
        waiting = int(lim.get("waiting_workers") or 0)
        empty = float(lim.get("tokens") or 0) <= r.max_free_fraction * float(lim.get("burst") or 0)
        if not lim.get("paused") and waiting >= r.min_waiting_workers and empty:
            saturated.append(f"{lim.get('name')} ({waiting} worker(s) waiting)")
    base = _baseline(history, facts.now, r.window)
    if base is not None:
        wall, wait = current.wall_ms - base.wall_ms, current.wait_ms - base.wait_ms
        if wall > 0 and wait / wall >= r.wait_fraction:
            saturated.append(f"attempts spent {100.0 * wait / wall:.0f}% of their time waiting")
    if not saturated:
        return None
    what = "rate limit saturated: " + "; ".join(saturated)
    action = (
        "the job runs at its limit: expect it to take longer, or raise the limit if the "
        f"API allows (`shardflow limit set {job.job_id} NAME RATE`)"
    )
    return _about(job, "rate_limit_saturated", WARNING, what, action)


def _infrastructure(
    facts: JobFacts, history: Sequence[Snapshot], current: Snapshot, rules: Rules
) -> Condition | None:
    job, r = facts.job, rules.infrastructure_errors
    if not r.enabled:
        return None
    base = _baseline(history, facts.now, r.window)
    recent_items = max(0, current.infra_items - base.infra_items) if base else 0
    count = facts.infra_tasks + recent_items
    if count < r.at_least:
        return None
    sample = f"; e.g. {facts.infra_sample[:200]}" if facts.infra_sample else ""
    what = (
        f"infrastructure errors: {facts.infra_tasks} task(s) retrying or failed, "
        f"{recent_items} item(s) recently{sample}"
    )
    action = (
        "check storage, network and node health (`shardflow doctor JOB_FILE` checks the "
        "job's stores); retries "
        f"continue on their own, `shardflow retry {job.job_id}` re-drives failed tasks"
    )
    return _about(job, "infrastructure_errors", ERROR, what, action, details={"count": count})


def evaluate_job(facts: JobFacts, history: Sequence[Snapshot], rules: Rules) -> list[Condition]:
    """The conditions that hold for one job now. ``history`` is oldest first and does
    not include the current pass. A FAILED job can only be ``job_failed``; other
    finished jobs raise nothing."""
    job = facts.job
    if job.status is JobStatus.FAILED:
        found = [_job_failed(facts, rules)]
    elif job.status.is_final:
        return []
    else:
        current = Snapshot.of(facts.now, facts.counters)
        found = [
            _stalled(facts, history, current, rules),
            _error_rate(facts, history, current, rules),
            _failure_budget(facts, current, rules),
            _rate_limited(facts, history, current, rules),
            _infrastructure(facts, history, current, rules),
        ]
    return [c for c in found if c is not None]


def evaluate_host(facts: HostFacts, rules: Rules) -> list[Condition]:
    """Disk (the workspace's filesystem) and memory near exhaustion on this machine."""
    out: list[Condition] = []
    subject = f"host:{facts.host}"
    r_disk = rules.disk
    if r_disk.enabled and facts.disk_total > 0:
        pct = 100.0 * facts.disk_free / facts.disk_total
        if pct < r_disk.min_free_percent:
            out.append(
                Condition(
                    "disk",
                    subject,
                    CRITICAL,
                    f"disk nearly full on {facts.host}: {pct:.1f}% free at {facts.path} "
                    f"({facts.disk_free / 2**30:.1f} GiB)",
                    "free space (old job scratch: `shardflow purge OLD_JOB --yes`) or move the "
                    "workspace; workers fail with infrastructure errors when writes fail",
                    details={"free_percent": round(pct, 2)},
                )
            )
    r_mem = rules.memory
    if r_mem.enabled and facts.mem_total and facts.mem_available is not None:
        pct = 100.0 * facts.mem_available / facts.mem_total
        if pct < r_mem.min_available_percent:
            out.append(
                Condition(
                    "memory",
                    subject,
                    CRITICAL,
                    f"memory nearly exhausted on {facts.host}: {pct:.1f}% available",
                    "reduce resources.slots or the handler's memory use; the kernel's OOM "
                    "killer ends attempts, which then retry",
                    details={"available_percent": round(pct, 2)},
                )
            )
    return out
