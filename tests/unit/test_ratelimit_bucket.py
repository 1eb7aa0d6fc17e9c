"""Token buckets with an injected clock: the pure refill math, the leased-block client
over the in-memory store, the runtime controls and the ``shardflow limit`` commands.

The property the design exists for: over any interval of length w, the tokens spent are
at most ``rate·w + burst``, whatever the holders do with their blocks (spend them late,
give them back, die holding them)."""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from shardflow.cli.limit import limit
from shardflow.errors import ConfigError, StopRequested, UsageError
from shardflow.models import Job
from shardflow.ratelimit import bucket as b
from shardflow.ratelimit.client import TokenClient, make_limiter, waiting_counter
from shardflow.ratelimit.control import (
    bucket_key,
    configured_limits,
    ensure_buckets,
    limit_usage,
    set_limit,
    set_paused,
)
from shardflow.statestore.base import StateStore
from shardflow.statestore.memory import MemoryStateStore
from shardflow.statestore.sqlite import SqliteStateStore
from shardflow.worker.context import RateLimiter

P, JOB = 1.0, "job-a"  # margin_for(P) is 0.1


class FakeClock:
    """Wall time that moves only when someone sleeps (or a test moves it)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []
        self.hooks: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        for hook in list(self.hooks):
            hook()


def assert_within_bound(spends: list[tuple[float, float]], rate: float, burst: float) -> None:
    spends = sorted(spends)
    for i, (start, _) in enumerate(spends):
        total = 0.0
        for end, amount in spends[i:]:
            total += amount
            assert total <= rate * (end - start) + burst + 1e-6, (start, end, total)


def make_job(store: StateStore, limits: dict[str, tuple[float, int]], now: float = 0.0) -> None:
    section = {n: {"rate": r, "burst": s} for n, (r, s) in limits.items()}
    store.create_job(Job(job_id=JOB, name="n", config={"config": {"rate_limits": section}}))
    job = store.get_job(JOB)
    assert job is not None
    ensure_buckets(store, JOB, configured_limits(job), now)


def new_client(store: StateStore, clock: FakeClock, seed: int = 7) -> TokenClient:
    return TokenClient(
        store,
        JOB,
        ["api"],
        owner=f"w{seed}",
        clock=clock,
        sleep=clock.sleep,
        period=P,
        rng=random.Random(seed),
    )


def bucket(store: StateStore) -> b.BucketState:
    state = store.get_bucket(bucket_key(JOB, "api"))
    assert state is not None
    return state


# -- the pure math ------------------------------------------------------------------------


def test_refill_is_capped_by_burst_minus_leased_and_time_never_runs_back() -> None:
    s = b.BucketState("j/a", rate=10.0, burst=20.0, tokens=0.0, last_refill=100.0, leased=5.0)
    assert b.settle(s, 100.5, P).tokens == pytest.approx(5.0)
    assert b.settle(s, 100.9, P).tokens == pytest.approx(9.0)
    later = b.settle(s, 103.0, P)  # a new period: the leases expired, the cap is the burst
    assert (later.tokens, later.leased) == (20.0, 0.0)
    behind = b.settle(later, 90.0, P)
    assert (behind.last_refill, behind.tokens) == (103.0, 20.0)


def test_once_no_block_can_be_spent_the_bucket_refills_to_the_whole_burst() -> None:
    s = b.BucketState("j/a", rate=10.0, burst=20.0, tokens=0.0, last_refill=100.0, leased=15.0)
    assert b.settle(s, 100.9, P).tokens == pytest.approx(5.0)  # capped by the leases…
    # …until the last half margin, when holders have stopped spending
    assert b.settle(s, 100.99, P).tokens == pytest.approx(5.4)
    assert b.settle(s, 100.99, P).leased == 15.0
    assert b.settle(s, 101.5, P).tokens == pytest.approx(5.0 + 10 * 0.55)
    assert b.settle(s, 101.5, P).leased == 0  # the next period: those leases expired


def test_grant_takes_a_block_or_says_how_long_to_wait() -> None:
    s = b.new_bucket("j/a", rate=10.0, burst=20.0, now=100.0)
    g = b.grant(s, need=1, want=8, period=P)
    assert (g.tokens, g.state.tokens, g.state.leased) == (8, 12, 8)
    assert g.usable_for == pytest.approx(0.9)
    short = b.grant(g.state, need=15, want=15, period=P)
    assert short.tokens == 0
    assert short.reason == "room"  # 15 > burst − leased: wait for blocks to come back
    assert short.wait == pytest.approx(1.5)
    partial = b.grant(g.state, need=3, want=30, period=P)
    assert partial.tokens == 12  # all there is, since that is at least what is needed
    late = b.grant(b.settle(s, 100.95, P), need=1, want=1, period=P)
    assert late.tokens == 0
    assert late.wait == pytest.approx(0.05)
    paused = b.grant(dataclasses.replace(s, paused=True), need=1, want=1, period=P)
    assert paused.tokens == 0
    assert math.isinf(paused.wait)
    with pytest.raises(ValueError, match="exceed the burst"):
        b.grant(s, need=21, want=21, period=P)


def test_a_deficit_reserves_a_block_that_starts_when_the_refill_has_paid_for_it() -> None:
    s = dataclasses.replace(b.new_bucket("j/a", rate=10.0, burst=20.0, now=100.0), tokens=1.0)
    g = b.grant(s, need=4, want=4, period=P)
    assert (g.tokens, g.state.tokens, g.state.leased) == (4, -3, 4)
    assert g.starts_in == pytest.approx(0.3)
    queued = b.grant(g.state, need=2, want=2, period=P)
    assert queued.starts_in == pytest.approx(0.5)  # behind the first reservation
    # no reservation beyond what the refill pays within the period (or the caller waits)
    assert b.grant(g.state, need=9, want=9, period=P).tokens == 0
    impatient = b.grant(g.state, need=2, want=2, period=P, max_delay=0.2)
    assert impatient.tokens == 0
    assert impatient.wait == pytest.approx(0.5)


def test_give_back_frees_the_lease_and_returns_unused_tokens_within_its_period() -> None:
    s = b.new_bucket("j/a", rate=10.0, burst=20.0, now=100.0)
    g = b.grant(s, need=1, want=10, period=P)
    back = b.give_back(g.state, size=10, unused=4, granted_in=g.period, period=P)
    assert (back.tokens, back.leased) == (14, 0)
    expired = b.settle(g.state, 101.2, P)
    assert b.give_back(expired, size=10, unused=4, granted_in=g.period, period=P) == expired


def test_set_limit_settles_at_the_old_rate_then_clamps_to_the_new_burst() -> None:
    s = dataclasses.replace(b.new_bucket("j/a", rate=10.0, burst=20.0, now=100.0), tokens=0.0)
    changed = b.set_limit(s, rate=1.0, burst=3.0, now=100.5, period=P)
    assert (changed.rate, changed.burst, changed.tokens) == (1.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="rate above zero"):
        b.set_limit(s, rate=0.0, burst=3.0, now=100.5, period=P)


def test_blocks_reserved_at_a_rate_since_lowered_leave_no_debt_past_their_period() -> None:
    s = dataclasses.replace(b.new_bucket("j/a", rate=100.0, burst=100.0, now=100.1), tokens=10.0)
    reserved = b.grant(s, need=50, want=50, period=P)
    assert reserved.tokens == 50
    assert reserved.starts_in == pytest.approx(0.4)
    lowered = b.set_limit(reserved.state, rate=10.0, burst=100.0, now=100.2, period=P)
    assert lowered.tokens == pytest.approx(-30)  # paid at 10/s it would outlive its period…
    nxt = b.settle(lowered, 101.0, P)
    assert (nxt.tokens, nxt.leased) == (0.0, 0.0)  # …so the new rate starts clean there
    assert b.settle(lowered, 101.5, P).tokens == pytest.approx(5.0)


_OPS = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(["take", "spend", "spend", "give_back", "die"]),
        st.floats(0.0, 0.6),
        st.integers(1, 25),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(1.0, 100.0), burst=st.integers(1, 60), ops=_OPS)
def test_spends_never_exceed_rate_times_w_plus_burst(
    rate: float, burst: int, ops: list[tuple[int, str, float, int]]
) -> None:
    state = b.new_bucket("j/a", rate, float(burst), 0.0)
    blocks: dict[int, list[float]] = {}  # holder → [size, remaining, period, start, until]
    spends: list[tuple[float, float]] = []
    t = 0.0
    for holder, op, dt, n in ops:
        t += dt
        block = blocks.get(holder)
        if op == "take" and block is None:
            g = b.grant(b.settle(state, t, P), need=min(n, burst), want=2 * n, period=P)
            state = g.state
            if g.tokens:
                blocks[holder] = [g.tokens, g.tokens, g.period, t + g.starts_in, t + g.usable_for]
        elif op == "spend" and block is not None and block[3] <= t < block[4]:
            amount = min(float(n), block[1])
            block[1] -= amount
            spends.append((t, amount))
        elif op == "give_back" and block is not None:
            state = b.give_back(
                b.settle(state, t, P),
                size=block[0],
                unused=block[1],
                granted_in=int(block[2]),
                period=P,
            )
            del blocks[holder]
        elif op == "die":
            blocks.pop(holder, None)
        assert state.tokens <= state.burst + 1e-9
        assert state.leased <= state.burst + 1e-9
        if state.last_refill < b.period_end(state.last_refill, P) - b.margin_for(P) / 2:
            assert state.tokens + state.leased <= state.burst + 1e-9
    assert_within_bound(spends, rate, burst)


# -- the client over the in-memory store --------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    schedule=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(["acquire", "acquire", "acquire", "throttled", "close", "die"]),
            st.floats(0.0, 0.3),
            st.integers(1, 5),
        ),
        max_size=80,
    )
)
def test_clients_sharing_a_bucket_stay_within_the_bound(
    schedule: list[tuple[int, str, float, int]],
) -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (20.0, 8)}, now=clock.now)
    clients = {i: new_client(store, clock, i) for i in range(3)}
    spends: list[tuple[float, float]] = []
    for who, op, dt, n in schedule:
        clock.now += dt
        c = clients[who]
        if op == "acquire":
            c.acquire("api", n, timeout=5.0)
            spends.append((clock.now, float(n)))
        elif op == "throttled":
            c.report_throttled("api")
        elif op == "close":
            c.close()
        else:  # killed holding whatever it held: a new process takes its place
            clients[who] = new_client(store, clock, who + 10)
    assert_within_bound(spends, 20.0, 8)


class VirtualTime:
    """Threads that take turns on one virtual clock: ``sleep`` hands the turn to whoever
    wakes first, so workers wait concurrently, yet no real time passes and every run
    interleaves the same way."""

    def __init__(self, now: float) -> None:
        self.now = now
        self._cv = threading.Condition()
        self._wakeups: list[tuple[float, int, int]] = []
        self._turn: int | None = None
        self._seq = itertools.count()
        self._me = threading.local()
        self.errors: list[BaseException] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        me: int = self._me.index
        with self._cv:
            heapq.heappush(self._wakeups, (self.now + max(seconds, 0.0), next(self._seq), me))
            self._turn = None
            self._cv.notify_all()
            self._cv.wait_for(lambda: self._turn == me)

    def run(self, bodies: list[Callable[[], None]]) -> None:
        def start(index: int, body: Callable[[], None]) -> None:
            self._me.index = index
            try:
                with self._cv:
                    self._cv.wait_for(lambda: self._turn == index)
                body()
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                with self._cv:
                    self._turn = None
                    self._cv.notify_all()

        with self._cv:
            for i in range(len(bodies)):
                heapq.heappush(self._wakeups, (self.now, next(self._seq), i))
        threads = [threading.Thread(target=start, args=(i, f)) for i, f in enumerate(bodies)]
        for t in threads:
            t.start()
        with self._cv:
            while self._wakeups:
                self.now, _, who = heapq.heappop(self._wakeups)
                self._turn = who
                self._cv.notify_all()
                self._cv.wait_for(lambda: self._turn is None)
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]


def run_workers(
    store: StateStore,
    vt: VirtualTime,
    workers: int,
    seconds: float,
    call: float = 0.005,
    die: dict[int, float] | None = None,
) -> tuple[list[tuple[float, float]], list[TokenClient]]:
    """``workers`` virtual processes, each acquiring one token per API call of ``call``
    seconds until ``seconds`` have passed (or, for those in ``die``, until they die
    without giving anything back)."""
    spends: list[tuple[float, float]] = []
    clients = [
        TokenClient(
            store,
            JOB,
            ["api"],
            owner=f"w{i}",
            clock=vt,
            sleep=vt.sleep,
            period=P,
            rng=random.Random(i),
        )
        for i in range(workers)
    ]
    end = vt.now + seconds

    def body(i: int) -> Callable[[], None]:
        def loop() -> None:
            stop = end if die is None or i not in die else vt.now + die[i]
            while vt.now < stop:
                clients[i].acquire("api")
                spends.append((vt.now, 1.0))
                vt.sleep(call)
            if die is None or i not in die:
                clients[i].close()

        return loop

    vt.run([body(i) for i in range(workers)])
    return spends, clients


def test_16_saturating_workers_get_90_percent_of_the_rate_with_few_store_ops() -> None:
    store = MemoryStateStore()
    vt = VirtualTime(1000.0)
    make_job(store, {"api": (200.0, 200)}, now=vt.now)  # burst: the default, the rate
    spends, clients = run_workers(store, vt, 16, 10.0)
    assert_within_bound(spends, 200.0, 200)
    assert len(spends) >= 0.9 * 200 * 10
    ops = sum(c.stats["reads"] + c.stats["writes"] for c in clients)
    assert ops / len(spends) < 0.4  # blocks: well under one store round trip per token


def test_a_worker_that_dies_holding_a_block_costs_tokens_only_until_its_period_ends() -> None:
    store = MemoryStateStore()
    vt = VirtualTime(1000.0)
    make_job(store, {"api": (200.0, 50)}, now=vt.now)
    spends, _ = run_workers(store, vt, 4, 6.0, call=0.001, die={0: 2.0, 1: 2.0})
    assert_within_bound(spends, 200.0, 50)
    after = [t for t, _ in spends if t >= 1000.0 + 3.0]  # a full period after the deaths
    assert len(after) >= 0.9 * 200 * 3.0


def test_blocks_grow_while_used_quickly_and_restart_small_after_a_429() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (1000.0, 400)}, now=clock.now)
    c = new_client(store, clock)
    for _ in range(200):
        c.acquire("api")
        clock.now += 0.001
    assert c.stats["blocks"] <= 9  # 1, 2, 4, … up to a quarter of the burst
    assert c.stats["writes"] == c.stats["blocks"]
    c.report_throttled("api")
    before = c.stats
    while c.stats["blocks"] == before["blocks"]:
        c.acquire("api")
    assert c.stats["granted"] - before["granted"] == 1
    assert clock.now - 1000.0 >= 0.2 + 0.25  # the 200 calls, then the backoff


def test_a_429_backs_off_with_growing_jittered_delays() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (100.0, 10)}, now=clock.now)
    c = new_client(store, clock)
    waits = []
    for _ in range(3):
        c.report_throttled("api")
        before = clock.now
        c.acquire("api")
        waits.append(clock.now - before)
    assert 0.25 <= waits[0] <= 0.5
    assert 0.5 <= waits[1] <= 1.0
    assert 1.0 <= waits[2] <= 2.0


def test_unknown_limit_negative_tokens_and_too_many_at_once_are_clear_errors() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (10.0, 5)})
    c = TokenClient(store, JOB, ["api", "geo"], owner="w", clock=clock, sleep=clock.sleep)
    with pytest.raises(ConfigError, match=r"'geocode' is not configured.*configured: api, geo"):
        c.acquire("geocode")
    with pytest.raises(ValueError, match="zero or more"):
        c.acquire("api", -1)
    with pytest.raises(ValueError, match="exceed the burst"):
        c.acquire("api", 6)


def test_acquire_times_out_after_the_timeout_without_real_sleeping() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (1.0, 1)}, now=clock.now)
    c = new_client(store, clock)
    c.acquire("api")
    start = clock.now
    with pytest.raises(TimeoutError, match="'api'"):
        c.acquire("api", timeout=0.5)
    assert clock.now - start == pytest.approx(0.5)


def test_a_paused_bucket_holds_workers_until_resumed_and_counts_them_waiting() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (10.0, 5)}, now=clock.now)
    assert set_paused(store, JOB, True, clock.now, period=P) == 1
    assert set_paused(store, JOB, True, clock.now, period=P) == 0
    c = new_client(store, clock)
    seen: list[int] = []

    def resume_after_three_polls() -> None:
        seen.append(store.read_counters(JOB).get(waiting_counter("api"), 0))
        if len(seen) == 3:
            set_paused(store, JOB, False, clock.now, period=P)

    clock.hooks.append(resume_after_three_polls)
    c.acquire("api")
    assert seen[:3] == [1, 1, 1]
    assert store.read_counters(JOB).get(waiting_counter("api"), 0) == 0
    assert limit_usage(store, JOB, now=clock.now, period=P)[0].waiting_workers == 0


def test_a_worker_told_to_stop_while_held_by_a_paused_bucket_stops_within_one_sleep() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (10.0, 5)}, now=clock.now)
    set_paused(store, JOB, True, clock.now, period=P)
    stop = threading.Event()
    c = TokenClient(
        store,
        JOB,
        ["api"],
        owner="w",
        clock=clock,
        sleep=clock.sleep,
        period=P,
        should_stop=stop.is_set,
    )

    def sigterm_during_the_second_sleep() -> None:
        if len(clock.slept) == 2:
            stop.set()

    clock.hooks.append(sigterm_during_the_second_sleep)
    with pytest.raises(StopRequested, match="rate limit 'api'"):
        c.acquire("api")
    assert len(clock.slept) == 2  # the wait it was in when told, and no other
    assert not isinstance(StopRequested(), Exception)  # a handler's `except Exception` won't
    assert store.read_counters(JOB).get(waiting_counter("api"), 0) == 0
    assert c.stats.get("tokens", 0.0) == 0.0


def test_close_gives_unused_tokens_back_and_a_dead_holder_only_until_its_period_ends() -> None:
    store = MemoryStateStore()
    clock = FakeClock(1000.05)
    make_job(store, {"api": (100.0, 40)}, now=clock.now)
    c = new_client(store, clock)
    for _ in range(12):
        c.acquire("api")
    held = bucket(store).leased
    assert held >= 1
    tokens = bucket(store).tokens
    c.close()
    assert bucket(store).leased == 0
    assert bucket(store).tokens == tokens + c.stats["granted"] - 12  # the unspent came back
    dead = new_client(store, clock, 1)
    for _ in range(3):
        dead.acquire("api")  # blocks of 1 and 4: the second still holds 2 tokens
    assert bucket(store).leased == 4
    other = new_client(store, clock, 2)
    with pytest.raises(TimeoutError):  # the dead client's block keeps its tokens out of reach…
        other.acquire("api", 40, timeout=0.5)
    clock.now = math.floor(clock.now) + 1.0  # …until its period ends
    other.acquire("api", 40, timeout=0.01)


def test_a_block_is_never_spent_after_its_period_even_by_a_holder_that_slept() -> None:
    store = MemoryStateStore()
    clock = FakeClock(1000.05)
    make_job(store, {"api": (100.0, 40)}, now=clock.now)
    sleeper = new_client(store, clock)
    for _ in range(2):
        sleeper.acquire("api")  # blocks of 1 and 4: three tokens still unspent
    assert sleeper.stats["granted"] - sleeper.stats["tokens"] == 3
    clock.now = 1001.5  # frozen past its period: meanwhile another worker takes it all
    new_client(store, clock, 1).acquire("api", 40)
    blocks = sleeper.stats["blocks"]
    sleeper.acquire("api")
    assert sleeper.stats["blocks"] == blocks + 1  # a new block, not the stale one
    assert clock.now >= 1001.5 + 0.01  # paid for by the refill


def test_metrics_are_deltas_since_the_last_call() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (100.0, 40)}, now=clock.now)
    c = new_client(store, clock)
    for _ in range(5):
        c.acquire("api")
    first = c.metrics()
    assert first["tokens"] == 5
    assert first["ratelimit_store_ops"] >= 2
    assert c.metrics() == {}


def test_make_limiter_is_a_no_op_without_limits_and_needs_a_bucket_with_them() -> None:
    store = MemoryStateStore()
    assert type(make_limiter(store, JOB, [], owner="w")) is RateLimiter
    limiter = make_limiter(store, JOB, ["api"], owner="w")
    with pytest.raises(Exception, match="no bucket for job job-a"):
        limiter.acquire("api")


# -- runtime control ----------------------------------------------------------------------


def test_ensure_buckets_is_idempotent_and_keeps_a_changed_rate() -> None:
    store = MemoryStateStore()
    make_job(store, {"api": (10.0, 5), "geo": (2.0, 2)})
    assert ensure_buckets(store, JOB, {"api": (10.0, 5)}, 1.0) == []
    set_limit(store, JOB, "api", rate=3.0, now=2.0, actor="cli:me", period=P)
    job = store.get_job(JOB)
    assert job is not None
    ensure_buckets(store, JOB, configured_limits(job), 3.0)  # a re-submit
    assert (bucket(store).rate, bucket(store).burst) == (3.0, 5.0)
    assert [e.kind for e in store.list_events(JOB)] == ["limit_set"]


def test_set_limit_refuses_a_limit_the_job_does_not_have() -> None:
    store = MemoryStateStore()
    make_job(store, {"api": (10.0, 5)})
    with pytest.raises(UsageError, match=r"no rate limit 'geo' \(configured: api\)"):
        set_limit(store, JOB, "geo", rate=3.0, now=1.0)
    with pytest.raises(UsageError, match="not found"):
        set_limit(store, "job-b", "api", rate=3.0, now=1.0)
    with pytest.raises(ValueError, match="burst of at least 1"):
        set_limit(store, JOB, "api", rate=3.0, burst=0, now=1.0)


def test_buckets_of_a_paused_job_are_created_paused() -> None:
    store = MemoryStateStore()
    section = {"api": {"rate": 5.0, "burst": 5}}
    store.create_job(
        Job(job_id=JOB, name="n", paused=True, config={"config": {"rate_limits": section}})
    )
    assert ensure_buckets(store, JOB, {"api": (5.0, 5.0)}, 0.0) == ["api"]
    assert bucket(store).paused


def test_limit_usage_reports_rate_tokens_leased_and_pause() -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    make_job(store, {"api": (100.0, 40)}, now=clock.now)
    c = new_client(store, clock)
    for _ in range(4):
        c.acquire("api")
    (usage,) = limit_usage(store, JOB, now=clock.now, period=P)
    assert (usage.name, usage.rate, usage.burst, usage.paused) == ("api", 100.0, 40.0, False)
    assert usage.leased >= 1
    assert usage.tokens + usage.leased <= 40 - 1


# -- the CLI ------------------------------------------------------------------------------


def test_limit_set_and_show_on_a_sqlite_state(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = SqliteStateStore(db)
    make_job(store, {"geo_api": (50.0, 100)})
    runner = CliRunner()
    out = runner.invoke(
        limit, ["set", JOB, "geo_api", "3000/min", "--burst", "20", "--state-url", str(db)]
    )
    assert out.exit_code == 0, out.output
    assert "geo_api: 50/s → 50/s" in out.output or "rate 50/s" in out.output
    shown = runner.invoke(limit, ["show", JOB, "--state-url", str(db), "--json"])
    assert shown.exit_code == 0, shown.output
    (row,) = orjson.loads(shown.output)["limits"]
    assert (row["name"], row["rate"], row["burst"], row["paused"]) == ("geo_api", 50.0, 20.0, False)
    bad = runner.invoke(limit, ["set", JOB, "nope", "5/s", "--state-url", str(db)])
    assert bad.exit_code == 2
    assert "no rate limit 'nope'" in bad.output
    worse = runner.invoke(limit, ["set", JOB, "geo_api", "fast", "--state-url", str(db)])
    assert worse.exit_code == 2
    assert "expected a rate" in worse.output
    store.close()


def test_limit_set_on_a_submitted_job_is_recorded_in_the_audit_log(tmp_path: Path) -> None:
    """A real embedded job (local store, SQLite state) and the real command line: each
    `limit set` that changes the limit appends one `limit.set` entry with the actor, the
    job, the limit and its rate and burst before and after, and the chain still verifies."""
    from shardflow.testing.synthetic import write_jsonl
    from tests.e2e.helpers import run_json, shardflow, write_job

    write_jsonl(tmp_path / "in.jsonl", 20, seed=1)
    handlers = Path(__file__).parents[1] / "e2e" / "handlers_e2e.py"
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: limit-audit
handler: {handlers}:enrich
input: {{path: in.jsonl, id_field: id}}
batching: {{records: 10}}
rate_limits:
  geo_api: {{rate: 50/s, burst: 100}}
""",
    )
    shardflow(["submit", str(job), "--job-id", "lim1"], tmp_path, check=0)
    changed = run_json(
        ["limit", "set", "lim1", "geo_api", "3000/min", "--burst", "40"], tmp_path, check=0
    )
    assert (changed["rate"], changed["burst"]) == (50.0, 40.0)
    shardflow(["limit", "set", "lim1", "geo_api", "20/s"], tmp_path, check=0)
    shardflow(["limit", "set", "lim1", "geo_api", "20/s"], tmp_path, check=0)  # no change

    shown = shardflow(["audit", "show", "--job", "lim1", "--json"], tmp_path, check=0)
    entries = orjson.loads(shown.stdout)
    assert [e["action"] for e in entries] == [
        "job.submit",
        "job.dispatch",
        "limit.set",
        "limit.set",
    ]
    submitter = entries[0]["actor"]
    first, second = entries[2:]
    assert first["actor"] == second["actor"] == f"cli:{submitter}"
    assert first["job_id"] == second["job_id"] == "lim1"
    assert first["detail"] == {
        "limit": "geo_api",
        "before": {"rate": 50.0, "burst": 100.0},
        "after": {"rate": 50.0, "burst": 40.0},
    }
    assert second["detail"] == {
        "limit": "geo_api",
        "before": {"rate": 50.0, "burst": 40.0},
        "after": {"rate": 20.0, "burst": 40.0},
    }
    assert second["prev_hash"] == first["hash"]

    verified = run_json(["audit", "verify"], tmp_path, check=0)
    assert (verified["ok"], verified["entries"]) == (True, 4)
    assert verified["head"] == second["hash"]
