"""Runtime control of a job's token buckets: create, change, pause, read.

Which limits a job has comes from its config snapshot (``rate_limits:``); each has one
bucket keyed ``{job_id}/{name}``. Every change is a compare-and-set on the bucket row,
retried on conflict with the workers that write the same row, and settles the bucket
first (:func:`shardflow.ratelimit.bucket.settle`), so no token accrued at the old rate
is lost or invented. ``submit`` calls :func:`ensure_buckets`; ``shardflow limit set``
calls :func:`set_limit` (which, given an actor, records a ``limit_set`` event and a
``limit.set`` audit entry); ``shardflow pause``/``resume`` call :func:`set_paused`; the
status calls :func:`limit_usage`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shardflow.errors import ConflictError, UsageError
from shardflow.layout import validate_id
from shardflow.models import Event, Job
from shardflow.ratelimit import bucket as math_
from shardflow.ratelimit.base import BucketState
from shardflow.security import audit
from shardflow.statestore.base import StateStore

_TRIES = 50

log = logging.getLogger("shardflow.ratelimit")


def bucket_key(job_id: str, name: str) -> str:
    """``{job_id}/{name}``; InvalidIdError unless both are ids."""
    return f"{validate_id(job_id, 'job id')}/{validate_id(name, 'rate limit name')}"


def configured_limits(job: Job) -> dict[str, tuple[float, float]]:
    """``name → (rate per second, burst)`` from the job's config snapshot."""
    section = job.config.get("config", {}).get("rate_limits") or {}
    return {
        name: (float(spec["rate"]), float(spec.get("burst") or max(1, math.ceil(spec["rate"]))))
        for name, spec in section.items()
    }


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """One limit as the status shows it. ``tokens`` is what the bucket holds now,
    ``leased`` what workers hold in blocks of the current lease period, and
    ``waiting_workers`` how many acquires have waited more than a second (approximate:
    a worker killed while waiting stays counted)."""

    name: str
    rate: float
    burst: float
    tokens: float
    leased: float
    paused: bool
    waiting_workers: int


def ensure_buckets(
    state: StateStore,
    job_id: str,
    limits: Mapping[str, tuple[float, float]],
    now: float,
    *,
    paused: bool | None = None,
) -> list[str]:
    """Create the missing buckets, full; an existing one is left exactly as it is (a
    ``limit set`` survives a re-submit). ``paused`` defaults to the job's own flag.
    Returns the names created. Idempotent and safe to race with itself."""
    if paused is None:
        job = state.get_job(job_id)
        paused = bool(job and job.paused)
    created = []
    for name, (rate, burst) in sorted(limits.items()):
        key = bucket_key(job_id, name)
        if state.get_bucket(key) is not None:
            continue
        try:
            state.cas_bucket(math_.new_bucket(key, rate, burst, now, paused=paused), 0)
        except ConflictError:
            continue  # another submit created it first
        created.append(name)
    return created


def set_limit(
    state: StateStore,
    job_id: str,
    name: str,
    *,
    rate: float,
    burst: float | None = None,
    now: float,
    actor: str | None = None,
    period: float = math_.LEASE_PERIOD,
) -> BucketState:
    """Change a limit's rate (and burst; None keeps it) while the job runs. Workers see it
    at their next exchange; blocks already out keep being spent until their period ends.

    Raises UsageError if the job does not exist or does not configure ``name``, and
    ValueError for a rate or burst out of range. With ``actor``, records a
    ``limit_set`` event and, when the rate or burst changed, a ``limit.set`` audit entry
    (as pause and resume do: StoreError if the store refuses it, after the change was
    made). A bucket the submit did not create yet is created.
    """
    job = _job(state, job_id)
    limits = configured_limits(job)
    if name not in limits:
        known = ", ".join(sorted(limits)) or "none"
        raise UsageError(f"job {job_id} has no rate limit {name!r} (configured: {known})")
    math_.check_limit(rate, 1.0 if burst is None else burst)
    key = bucket_key(job_id, name)

    replaced: list[BucketState | None] = []  # what each try read; the last one won

    def change(current: BucketState | None) -> BucketState:
        replaced.append(current)
        if current is None:
            new_burst = limits[name][1] if burst is None else burst
            return math_.new_bucket(key, rate, new_burst, now, paused=job.paused)
        new_burst = current.burst if burst is None else burst
        return math_.set_limit(current, rate=rate, burst=new_burst, now=now, period=period)

    result = _update(state, key, change)
    assert result is not None
    if actor:
        detail = {"limit": name, "rate": rate, "burst": result.burst}
        state.append_event(Event(job_id, "limit_set", now, actor, detail))
        _audit_change(job, name, replaced[-1], result, actor=actor, now=now)
    return result


def _audit_change(
    job: Job,
    name: str,
    before: BucketState | None,
    after: BucketState,
    *,
    actor: str,
    now: float,
) -> None:
    """Append the ``limit.set`` audit entry of a change, in the store the job's config
    snapshot names; nothing when neither rate nor burst moved (control commands record
    only what changed something). A job without a snapshot is logged, as pause does."""
    old = None if before is None else {"rate": before.rate, "burst": before.burst}
    new = {"rate": after.rate, "burst": after.burst}
    if old == new:
        return
    store = audit.open_job_store(job)
    if store is None:
        log.warning("job %s has no config snapshot: limit.set is not in the audit log", job.job_id)
        return
    audit.record_limit_change(
        store, actor=actor, job_id=job.job_id, name=name, before=old, after=new, at=now
    )


def set_paused(
    state: StateStore,
    job_id: str,
    paused: bool,
    now: float,
    *,
    period: float = math_.LEASE_PERIOD,
) -> int:
    """Stop (or restart) token issuance on every bucket of the job; how many changed.

    Workers stop getting blocks at once; tokens already in their blocks may be spent
    until their lease period ends. A job without limits, or whose buckets do not exist
    yet, changes nothing (``ensure_buckets`` creates them with the job's flag).
    """
    job = state.get_job(job_id)
    if job is None:
        return 0
    changed = 0
    for name in sorted(configured_limits(job)):

        def flip(current: BucketState | None) -> BucketState | None:
            if current is None or current.paused == paused:
                return None
            return dataclasses.replace(math_.settle(current, now, period), paused=paused)

        if _update(state, bucket_key(job_id, name), flip) is not None:
            changed += 1
    return changed


def limit_usage(
    state: StateStore,
    job_id: str,
    *,
    now: float | None = None,
    period: float = math_.LEASE_PERIOD,
) -> list[LimitUsage]:
    """Each configured limit's bucket as of ``now`` (default: the wall clock), by name.
    Limits whose bucket does not exist yet are left out. One read per limit plus one
    counter read."""
    job = state.get_job(job_id)
    if job is None:
        return []
    at = time.time() if now is None else now
    counters = state.read_counters(job_id)
    usage = []
    for name in sorted(configured_limits(job)):
        stored = state.get_bucket(bucket_key(job_id, name))
        if stored is None:
            continue
        b = math_.settle(stored, at, period)
        waiting = max(0, counters.get(f"ratelimit.{name}.waiting", 0))
        usage.append(LimitUsage(name, b.rate, b.burst, b.tokens, b.leased, b.paused, waiting))
    return usage


def _job(state: StateStore, job_id: str) -> Job:
    job = state.get_job(validate_id(job_id, "job id"))
    if job is None:
        raise UsageError(f"job {job_id} not found")
    return job


def _update(
    state: StateStore,
    key: str,
    change: Callable[[BucketState | None], BucketState | None],
    sleep: Callable[[float], None] = time.sleep,
) -> BucketState | None:
    """Read-modify-write one bucket, retrying on conflict; None when ``change`` says
    there is nothing to write. ConflictError after too many lost races."""
    for _ in range(_TRIES):
        current = state.get_bucket(key)
        new = change(current)
        if new is None:
            return None
        try:
            return state.cas_bucket(new, 0 if current is None else current.version)
        except ConflictError:
            sleep(random.uniform(0.001, 0.01))  # workers write this row too: step aside
    raise ConflictError(f"bucket {key}: too much contention to change it")
