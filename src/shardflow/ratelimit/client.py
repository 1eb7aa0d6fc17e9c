"""The worker's token client: leased blocks of tokens over a :class:`BucketStore`.

``ctx.acquire(name)`` spends from a block the worker holds; only when the block runs
out (or expires) does it go to the store, and then one compare-and-set both gives the
old block back (unspent tokens return to the bucket) and takes the next, possibly
reserved ahead: the worker then sleeps until its block starts instead of polling. Block
sizes follow the worker's own rate of use: the first block is what was asked for, each
next one may be :data:`GROWTH` times larger while the worker spends quickly, up to about
:data:`BLOCK_SECONDS` of its use (more while writes conflict) and :data:`MAX_SHARE` of
the burst; ``report_throttled`` halves the estimate, restarts small and backs off.
Blocks expire with their lease period (:mod:`shardflow.ratelimit.bucket`), so a worker
that dies loses only what it held, and only until that period ends. In the last margin
of a period no block can be granted, and workers wait for the next one without asking.

Safety rules this module keeps: a block is dropped locally *before* the write that hands
it back, so an ambiguous store error can only lose tokens, never spend them twice; a
ConflictError means nothing was written (the :class:`BucketStore` contract) and the same
give-back is retried against the fresh row.

Waiting workers are counted in the job counter ``ratelimit.<name>.waiting``: +1 when an
acquire has waited :data:`WAITING_AFTER` seconds (at once when the bucket is paused), −1
when it ends. A worker killed while waiting leaves its +1 behind (the status clamps at 0).
A worker told to stop while it waits (``should_stop``: SIGTERM on preemption, even while
the job is paused) gets :class:`~shardflow.errors.StopRequested` instead of its tokens.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from shardflow.errors import ConfigError, ConflictError, NotFoundError, StopRequested, StoreError
from shardflow.ratelimit import bucket as math_
from shardflow.ratelimit.control import bucket_key
from shardflow.statestore.base import StateStore
from shardflow.worker.context import RateLimiter

log = logging.getLogger("shardflow.ratelimit")

WAITING_AFTER = 1.0
"""Seconds an acquire waits before it counts as a waiting worker in the status."""
BLOCK_SECONDS = 1.0
"""A block holds about this many seconds of the worker's recent use; up to a quarter of
the lease period while writes conflict (larger blocks, fewer writes)."""
GROWTH = 4.0
"""Each block may be this many times the last while the worker spends them quickly."""
MAX_SHARE = 0.25
"""No block is larger than this share of the burst (unless one acquire needs more)."""
POLL_PAUSED = 1.0
"""How often a worker re-reads a paused bucket."""
MAX_WAIT = 1.0
"""The longest sleep between reads, so that a rate change or a resume is seen soon."""
THROTTLE_BASE, THROTTLE_CAP = 0.5, 30.0
"""Backoff after ``report_throttled``: base·2^(n−1) seconds, jittered, capped."""
_GIVE_BACK_TRIES = 10


def waiting_counter(name: str) -> str:
    return f"ratelimit.{name}.waiting"


@dataclass
class _Block:
    size: float
    remaining: float
    period: int
    last_used: float  # local clock, as every time here
    starts_at: float  # a reserved block's tokens exist from then on
    usable_until: float


@dataclass
class _Limit:
    name: str
    key: str
    block: _Block | None = None
    returning: _Block | None = None  # handed back, not yet written
    use_rate: float = 0.0  # tokens per second this worker spends (EWMA)
    last_size: float = 0.0
    throttles: int = 0
    denials: int = 0  # in a row, for the poll backoff
    horizon: float = BLOCK_SECONDS  # seconds of use a block is sized for
    cycle_start: float | None = None  # when the block before the held one was retired
    throttled_in_block: bool = False
    backoff_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class TokenClient(RateLimiter):
    """A :class:`RateLimiter` drawing leased token blocks from a job's buckets.

    ``period`` must be the one every other client and control call of these buckets
    uses (:data:`~shardflow.ratelimit.bucket.LEASE_PERIOD`). ``clock`` is wall time (it
    stamps the shared bucket); ``sleep`` is how the client waits (never longer than
    :data:`POLL_PAUSED` · 1.25 s at once), and ``should_stop`` is asked before each wait.
    Thread-safe: threads of one handler share blocks; callers of one limit queue on its
    lock.
    """

    def __init__(
        self,
        state: StateStore,
        job_id: str,
        names: Collection[str],
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        period: float = math_.LEASE_PERIOD,
        rng: random.Random | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self._state = state
        self._job_id = job_id
        self._owner = owner
        self._clock = clock
        self._sleep = sleep
        self._should_stop = should_stop
        self._period = period
        self._margin = math_.margin_for(period)
        self._rng = rng or random.Random()
        self._limits = {n: _Limit(n, bucket_key(job_id, n)) for n in sorted(names)}
        self._stats_lock = threading.Lock()
        self._totals: dict[str, float] = {}
        self._op_time = 0.0  # seconds a store operation takes here (EWMA)
        self._reported: dict[str, float] = {}

    # -- the RateLimiter interface ---------------------------------------------------

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        """Block until ``tokens`` of limit ``name`` are ours; they count as spent.

        Raises ConfigError for a limit the job does not configure (naming those it
        does), ValueError for negative tokens or more than the burst at once,
        TimeoutError when ``timeout`` seconds pass first, NotFoundError if the job has
        no bucket for the limit, StoreError when the store fails, and StopRequested when
        the worker is told to stop while waiting.
        """
        lim = self._limit(name)
        if not tokens >= 0:
            raise ValueError(f"tokens must be zero or more, got {tokens!r}")
        if tokens == 0:
            return
        started = self._clock()
        if lim.cycle_start is None:
            lim.cycle_start = started
        deadline = None if timeout is None else started + timeout
        if not lim.lock.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise TimeoutError(f"rate limit {name!r}: no tokens within {timeout:g}s")
        registered = False
        try:
            while True:
                step = self._step(lim, tokens, deadline)
                if step is None:
                    return
                wait, paused = step
                now = self._clock()
                if deadline is not None:
                    if now >= deadline:
                        raise TimeoutError(f"rate limit {name!r}: no tokens within {timeout:g}s")
                    wait = min(wait, deadline - now)
                if self._should_stop():
                    raise StopRequested(f"stopped while waiting for rate limit {name!r}")
                if not registered and (paused or now - started >= WAITING_AFTER):
                    registered = True
                    self._state.add_counters(self._job_id, {waiting_counter(name): 1})
                self._sleep(min(wait, MAX_WAIT))
        finally:
            lim.lock.release()
            waited = self._clock() - started
            self._count(wait_s=waited)
            if registered:
                self._state.add_counters(self._job_id, {waiting_counter(name): -1})

    def report_throttled(self, name: str) -> None:
        """The API behind ``name`` said 429: halve the use estimate, restart with small
        blocks, and make the next acquire wait a jittered, growing backoff first."""
        lim = self._limit(name)
        with lim.lock:
            lim.throttles += 1
            lim.throttled_in_block = True
            lim.use_rate /= 2.0
            lim.last_size = 0.0
            delay = min(THROTTLE_CAP, THROTTLE_BASE * 2 ** (lim.throttles - 1))
            lim.backoff_until = self._clock() + delay * self._rng.uniform(0.5, 1.0)
        self._count(throttled=1.0)
        log.info("rate limit %s: %s was throttled by the API; backing off", name, self._owner)

    def close(self) -> None:
        """Give every block held back to its bucket (errors are logged: lost tokens only
        lower throughput until the period ends)."""
        self.release_idle(0.0)

    def metrics(self) -> dict[str, float]:
        """Counters since the last call: ``tokens``, ``ratelimit_wait_ms``,
        ``ratelimit_store_ops``, ``ratelimit_conflicts``, ``ratelimit_throttled``."""
        with self._stats_lock:
            now, before = dict(self._totals), self._reported
            self._reported = now

        d = {k: v - before.get(k, 0.0) for k, v in now.items()}
        out = {
            "tokens": d.get("tokens", 0.0),
            "ratelimit_wait_ms": d.get("wait_s", 0.0) * 1000.0,
            "ratelimit_store_ops": d.get("reads", 0.0) + d.get("writes", 0.0),
            "ratelimit_conflicts": d.get("conflicts", 0.0),
            "ratelimit_throttled": d.get("throttled", 0.0),
        }
        return {k: v for k, v in out.items() if v}

    # -- beyond the interface ----------------------------------------------------------

    def release_idle(self, idle_for: float = 1.0) -> int:
        """Give back blocks not spent from for ``idle_for`` seconds; how many went back.

        A give-back that keeps conflicting or fails is logged and dropped: its tokens
        come back when its lease period ends.
        """
        released = 0
        for lim in self._limits.values():
            with lim.lock:
                block = lim.block
                if block is not None and self._clock() - block.last_used < idle_for:
                    continue
                self._retire(lim)
                if lim.returning is None:
                    continue
                try:
                    for _ in range(_GIVE_BACK_TRIES):
                        self._exchange(lim, 0.0)
                        if lim.returning is None:
                            released += 1
                            break
                        self._sleep(self._rng.uniform(0.001, 0.01))
                    else:
                        log.warning("rate limit %s: gave up giving a block back", lim.name)
                except StoreError:
                    log.warning(
                        "rate limit %s: could not give a block back", lim.name, exc_info=True
                    )
                lim.returning = None
        return released

    # -- internals -----------------------------------------------------------------------

    def _limit(self, name: str) -> _Limit:
        lim = self._limits.get(name)
        if lim is None:
            known = ", ".join(self._limits) or "none"
            raise ConfigError(
                f"rate limit {name!r} is not configured for job {self._job_id} "
                f"(configured: {known}); add it under rate_limits: in the job file"
            )
        return lim

    def _step(
        self, lim: _Limit, tokens: float, deadline: float | None
    ) -> tuple[float, bool] | None:
        """Spend ``tokens`` from the held block, exchanging it if it cannot serve them:
        None when spent; else how long to sleep, and whether the bucket is paused."""
        while True:
            now = self._clock()
            if lim.backoff_until > now:
                return lim.backoff_until - now, False
            block = lim.block
            if block and now < block.usable_until and block.remaining + 1e-9 >= tokens:
                if now < block.starts_at:
                    return block.starts_at - now, False  # reserved: its tokens exist then
                block.remaining = max(0.0, block.remaining - tokens)
                block.last_used = now
                self._count(tokens=tokens, acquires=1.0)
                return None
            end = math_.period_end(now, self._period)
            if now >= end - self._margin:
                # nothing can be granted this late in a period: wait for the next one
                # without a store round trip (the block expires with the period anyway)
                self._retire(lim)
                self._count(denied_period=1.0)
                return self._poll_wait(lim, end - now, "period"), False
            patience = math.inf if deadline is None else deadline - now
            wait, reason = self._exchange(lim, tokens, patience)
            if reason != "granted":
                self._count(**{f"denied_{reason}": 1.0})
                return self._poll_wait(lim, wait, reason), reason == "paused"

    def _poll_wait(self, lim: _Limit, wait: float, reason: str) -> float:
        """How long to sleep after a denial (``reason`` as in :class:`bucket.Grant`, or
        ``conflict``): jittered so that waiting workers do not come back together."""
        if reason == "paused":
            return POLL_PAUSED * self._rng.uniform(1.0, 1.25)
        if reason == "period":
            # everyone denied in the dead time comes back at the period start: spread them
            return wait + self._rng.uniform(0.0, max(self._margin, 4 * self._op_time))
        if reason == "patience":
            return wait
        # the whole burst is out, or another writer won the row: back off while it lasts
        # (after a conflict, in units of how long a read and a write take on this store)
        lim.denials += 1
        base = max(wait, 2 * self._op_time) if reason == "conflict" else wait
        return base * 2.0 ** min(lim.denials - 1, 4) * self._rng.uniform(0.5, 1.5)

    def _want(self, lim: _Limit, need: float, burst: float, usable: float) -> float:
        by_use = lim.use_rate * min(lim.horizon, usable)
        growth = GROWTH * lim.last_size if lim.last_size else need
        return max(need, min(by_use, growth, burst * MAX_SHARE))

    def _retire(self, lim: _Limit) -> None:
        """Stop spending the held block: learn the rate of use from it and queue it for
        give-back (before any write, so that an ambiguous failure can only lose it)."""
        block, lim.block = lim.block, None
        if block is None:
            return
        now = self._clock()
        if now >= block.usable_until and block.remaining > 0:
            self._count(expired=block.remaining)
        # the rate achieved over the whole cycle (waiting for room and for the block's
        # start included), not the pace of spending it: a worker held back by the bucket
        # then asks for its share, and does not hoard the room others wait for
        start, lim.cycle_start = lim.cycle_start, now
        if start is not None:
            sample = (block.size - block.remaining) / max(now - start, 1e-3)
            lim.use_rate = sample if lim.use_rate == 0 else (lim.use_rate + sample) / 2.0
        if block.remaining <= 1e-9 and not lim.throttled_in_block:
            lim.throttles = 0
        lim.throttled_in_block = False
        lim.returning = block

    def _exchange(self, lim: _Limit, need: float, patience: float = math.inf) -> tuple[float, str]:
        """Give back the held block and take one of at least ``need`` tokens starting
        within ``patience`` seconds (``need`` 0: give back only), in one compare-and-set.
        ``(0, "granted")`` when that is done, else seconds to wait and why (a
        :class:`bucket.Grant` reason, or ``conflict``)."""
        self._retire(lim)
        old = lim.returning
        now = self._clock()  # before the read: see the block deadline below
        stored = self._state.get_bucket(lim.key)
        self._count(reads=1.0)
        if stored is None:
            raise NotFoundError(
                f"rate limit {lim.name!r} has no bucket for job {self._job_id}: "
                "submit the job with this limit in its config"
            )
        state = math_.settle(stored, now, self._period)
        index = math_.period_index(state.last_refill, self._period)
        returned = old is not None and old.period == index
        if old is not None:
            state = math_.give_back(
                state,
                size=old.size,
                unused=old.remaining,
                granted_in=old.period,
                period=self._period,
            )
        if need > 0:
            end = math_.period_end(state.last_refill, self._period) - self._margin
            queue = max(0.0, need - state.tokens) / state.rate  # before a block could start
            want = self._want(lim, need, state.burst, end - state.last_refill - queue)
            decision = math_.grant(
                state,
                need=need,
                want=want,
                period=self._period,
                max_delay=patience,
            )
        else:
            want = 0.0
            decision = math_.Grant(state, 0.0, index, 0.0, 0.0, 0.0, "granted")
        if decision.tokens == 0 and not returned:
            lim.returning = None  # nothing held, or its period ended: nothing to give back
            return decision.wait, decision.reason
        try:
            self._state.cas_bucket(decision.state, stored.version)
        except ConflictError:
            # nothing was written: the same give-back is retried on the fresh row
            self._count(writes=1.0, conflicts=1.0)
            self._time_op(now)
            lim.horizon = min(max(BLOCK_SECONDS, self._period / 4), lim.horizon * 1.5)
            return 0.001, "conflict"
        self._count(writes=1.0)
        self._time_op(now)
        lim.horizon = max(BLOCK_SECONDS, lim.horizon * 0.9)
        lim.returning = None
        if decision.tokens == 0:
            return decision.wait, decision.reason
        lim.denials = 0
        # growth follows what was wanted: a short grant says the bucket was drained,
        # not that this worker spends slowly
        lim.last_size = max(decision.tokens, want)
        self._count(blocks=1.0, granted=decision.tokens)
        # ``now`` was read before the row, and the row's time is at least ``now``: this
        # deadline is no later than ``margin`` before the period ends by the row's clock
        lim.block = _Block(
            size=decision.tokens,
            remaining=decision.tokens,
            period=decision.period,
            last_used=now,
            starts_at=now + decision.starts_in,
            usable_until=now + decision.usable_for,
        )
        return 0.0, "granted"

    def _time_op(self, started: float) -> None:
        """Learn how long a store operation takes (half a read and a write, averaged)."""
        took = max(0.0, self._clock() - started) / 2
        self._op_time = took if self._op_time == 0 else 0.8 * self._op_time + 0.2 * took

    def _count(self, **values: float) -> None:
        with self._stats_lock:
            for key, value in values.items():
                self._totals[key] = self._totals.get(key, 0.0) + value

    @property
    def stats(self) -> dict[str, float]:
        """Totals since start: ``tokens`` spent, ``acquires``, ``blocks`` taken and the
        tokens ``granted`` in them, ``reads``, ``writes`` (every compare-and-set tried),
        ``conflicts``, ``wait_s``, ``throttled``, and ``denied_<reason>`` per reason a
        request was turned down (:class:`bucket.Grant`)."""
        with self._stats_lock:
            return dict(self._totals)


def make_limiter(
    state: StateStore,
    job_id: str,
    names: Collection[str],
    *,
    owner: str,
    should_stop: Callable[[], bool] = lambda: False,
) -> RateLimiter:
    """The worker's limiter for ``job_id``: a :class:`TokenClient` over the named limits,
    or the no-op :class:`RateLimiter` when the job configures none."""
    if not names:
        return RateLimiter()
    return TokenClient(state, job_id, names, owner=owner, should_stop=should_stop)
