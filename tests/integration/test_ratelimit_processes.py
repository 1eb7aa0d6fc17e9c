"""The rate limiter across real worker processes on the SQLite state store.

Sixteen spawned workers call a local HTTP server that records when each request arrives
(and when its token was granted). In every 1-second window the count stays within
``rate + burst``, throughput is at least 90% of the rate, a rate change takes effect
within one lease period, and a worker killed (or frozen) while holding a block of tokens
does not keep them past its lease. ``test_ratelimit_dynamodb.py`` runs the same
scenarios on DynamoDB (moto) through the helpers here.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import os
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shardflow.models import Job
from shardflow.ratelimit.bucket import period_end
from shardflow.ratelimit.client import TokenClient
from shardflow.ratelimit.control import (
    configured_limits,
    ensure_buckets,
    set_limit,
)
from shardflow.statestore.base import StateStore
from shardflow.statestore.sqlite import SqliteStateStore

JOB, NAME = "rl-job", "api"
PERIOD = 2.0  # seconds: short, so that a test sees a few lease periods
WORKERS = 16
MEASURED_PERIODS = 2  # whole lease periods over which each rate's throughput is measured
SPAWN = multiprocessing.get_context("spawn")


# -- the API the workers call ---------------------------------------------------------------


@dataclass
class Hits:
    """(arrival time, token time, worker) of every request the server answered."""

    rows: list[tuple[float, float, int]] = field(default_factory=list)
    cv: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(
        self, predicate: Callable[[list[tuple[float, float, int]]], bool], timeout: float
    ) -> None:
        with self.cv:
            assert self.cv.wait_for(lambda: predicate(self.rows), timeout), len(self.rows)


def _handler(hits: Hits) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per worker

        def do_GET(self) -> None:
            arrived = time.time()
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            with hits.cv:
                hits.rows.append((arrived, float(query["t"][0]), int(query["w"][0])))
                hits.cv.notify_all()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


@contextlib.contextmanager
def serve_api() -> Iterator[tuple[str, Hits]]:
    """A ThreadingHTTPServer on 127.0.0.1 and a free port: its ``host:port`` and hits."""
    hits = Hits()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hits))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"{host}:{port}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def api() -> Iterator[tuple[str, Hits]]:
    with serve_api() as served:
        yield served


# -- worker processes (module level, for spawn) -------------------------------------------


def call_api_worker(
    state_url: str, address: str, index: int, go: Any, stop: Any, ready: Any
) -> None:
    """Acquire a token, call the API, repeat until ``stop``; give unused tokens back and
    report the limiter's totals on ``ready``."""
    from shardflow.backends import open_state_store

    state = open_state_store(state_url)
    limiter = TokenClient(state, JOB, [NAME], owner=f"w{index}", period=PERIOD)
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.connect()
    state.get_bucket(f"{JOB}/{NAME}")  # connect now, not in the first measured second
    ready.put(index)
    go.wait()
    while not stop.is_set():
        limiter.acquire(NAME, timeout=30)
        conn.request("GET", f"/?w={index}&t={time.time()!r}")
        conn.getresponse().read()
    limiter.close()
    conn.close()
    state.close()
    ready.put(limiter.stats)


def hold_block_worker(state_url: str, report: Any, resume: Any) -> None:
    """Spend quickly until holding a block with unspent tokens; report them and the
    client's totals, then wait; after ``resume``, acquire once more and report again."""
    from shardflow.backends import open_state_store

    state = open_state_store(state_url)
    client = TokenClient(state, JOB, [NAME], owner=f"hold{os.getpid()}", period=PERIOD)
    while True:
        client.acquire(NAME)
        held = client.stats["granted"] - client.stats["tokens"]
        if client.stats["blocks"] >= 4 and held >= 3:
            break
    report.put((held, client.stats))
    resume.wait()
    client.acquire(NAME, timeout=30)
    report.put(client.stats)


# -- scenarios, shared with the DynamoDB tests --------------------------------------------


@dataclass(frozen=True)
class Load:
    """A scenario's limit: ``rate`` and ``burst``, and the rate it is changed to."""

    rate: float = 200.0
    burst: int = 100
    new_rate: float = 100.0
    min_share: float = 0.9  # of each rate, the throughput the workers must reach


def make_job(state: StateStore, load: Load) -> None:
    section = {NAME: {"rate": load.rate, "burst": load.burst}}
    state.create_job(Job(job_id=JOB, name="rl", config={"config": {"rate_limits": section}}))
    job = state.get_job(JOB)
    assert job is not None
    ensure_buckets(state, JOB, configured_limits(job), time.time())


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any window of ``window`` seconds (sliding)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_load_with_a_rate_change(
    state: StateStore, state_url: str, address: str, hits: Hits, load: Load
) -> dict[str, float]:
    """16 workers at ``load.rate`` for :data:`MEASURED_PERIODS` whole lease periods after
    the first call, then at ``load.new_rate`` until as many whole periods passed from the
    second period boundary after the change; returns what was measured (asserted here)."""
    go, stop, ready = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=call_api_worker, args=(state_url, address, i, go, stop, ready))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        # throughput is measured over whole lease periods: grants cluster where a period
        # starts (tokens refilled in the last margin of the one before), so a window cut
        # mid-period would count a cluster more or less than the rate gives
        hits.wait_for(lambda rows: len(rows) > 0, timeout=30)
        # … and from the second whole period: in the first, 16 workers' first writes race
        # and each client grows its block size while its writes conflict (client.py)
        measured = period_end(hits.rows[0][0], PERIOD) + PERIOD
        changed = measured + MEASURED_PERIODS * PERIOD
        hits.wait_for(lambda rows: rows[-1][0] >= changed, timeout=30)
        changed = time.time()
        set_limit(state, JOB, NAME, rate=load.new_rate, now=changed, period=PERIOD)
        # blocks taken at the old rate expire with the period they were taken in: the
        # new limit holds from its end. The new rate's throughput is measured from the
        # period after, since that one starts with no tokens saved up (blocks reserved
        # at the old rate left a debt, forgiven where it ends)
        settled = period_end(changed, PERIOD)
        steady = settled + PERIOD
        stopped = steady + MEASURED_PERIODS * PERIOD
        hits.wait_for(lambda rows: rows[-1][0] >= stopped, timeout=30)
    finally:
        stop.set()
        totals: Counter[str] = Counter()
        for _ in procs:
            totals.update(ready.get(timeout=60))
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    arrived = [r[0] for r in hits.rows]
    granted = [r[1] for r in hits.rows]
    latency = max(r[0] - r[1] for r in hits.rows)
    window = MEASURED_PERIODS * PERIOD
    seen = {
        # the limiter's promise, on the times tokens were granted …
        "granted_max_before": max_in_window([t for t in granted if t < changed]),
        "granted_max_after": max_in_window([t for t in granted if t >= settled]),
        # … and as the API saw it: arrivals in a second were granted within 1 s + latency
        "arrived_max_before": max_in_window([t for t in arrived if t < changed]),
        "arrived_max_after": max_in_window([t for t in arrived if t >= settled + latency]),
        "latency": latency,
        "rate_before": sum(1 for t in arrived if measured <= t < measured + window) / window,
        "rate_after": sum(1 for t in arrived if steady <= t < stopped) / window,
        "store_ops_per_token": (totals["reads"] + totals["writes"]) / totals["tokens"],
        "conflicts_per_write": totals["conflicts"] / max(1.0, totals["writes"]),
        **{
            k: v
            for k, v in totals.items()
            if k.startswith("denied_") or k in ("blocks", "tokens", "granted", "expired")
        },
    }
    before, after = load.rate + load.burst, load.new_rate + load.burst
    assert seen["granted_max_before"] <= before, seen
    assert seen["granted_max_after"] <= after, seen
    assert seen["arrived_max_before"] <= before + load.rate * latency, seen
    assert seen["arrived_max_after"] <= after + load.new_rate * latency, seen
    # throughput: at least min_share (90%) of the rate, before and after the change
    assert seen["rate_before"] >= load.min_share * load.rate, seen
    assert seen["rate_after"] >= load.min_share * load.new_rate, seen
    assert seen["rate_before"] <= load.rate + load.burst / window, seen
    assert seen["rate_after"] <= load.new_rate + load.burst / window, seen
    return seen


def run_dead_and_frozen_holders(state: StateStore, state_url: str, burst: int) -> None:
    """One holder is killed and one frozen (SIGSTOP) while holding tokens: after the
    lease period the bucket has its whole burst again, and the frozen one, thawed, must
    take a new block instead of spending its expired one."""
    report_a, report_b, resume, never = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event(), SPAWN.Event()
    killed = SPAWN.Process(target=hold_block_worker, args=(state_url, report_a, never))
    frozen = SPAWN.Process(target=hold_block_worker, args=(state_url, report_b, resume))
    killed.start()
    frozen.start()
    try:
        held_a, _ = report_a.get(timeout=120)
        held_b, at_freeze = report_b.get(timeout=120)
        assert killed.pid is not None
        assert frozen.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        os.kill(frozen.pid, signal.SIGSTOP)
        assert held_a >= 3
        assert held_b >= 3
        # their tokens are out of reach until the lease period ends (the condition here
        # is the clock itself)
        time.sleep(max(0.0, period_end(time.time(), PERIOD) - time.time()))
        probe = TokenClient(state, JOB, [NAME], owner="probe", period=PERIOD)
        probe.acquire(NAME, burst, timeout=2 * PERIOD)  # the whole burst is back
        os.kill(frozen.pid, signal.SIGCONT)
        resume.set()
        thawed = report_b.get(timeout=60)
        frozen.join(timeout=60)
    finally:
        for p in (killed, frozen):
            if p.is_alive():
                assert p.pid is not None
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            p.join(timeout=30)
    assert frozen.exitcode == 0
    # its block had expired: the one token it spent after thawing came from a new block
    assert thawed["tokens"] == at_freeze["tokens"] + 1
    assert thawed["blocks"] == at_freeze["blocks"] + 1


# -- the tests on SQLite ----------------------------------------------------------------------

LOAD = Load(rate=200.0, burst=100, new_rate=100.0)


@pytest.fixture
def sqlite_state(tmp_path: Path) -> Iterator[SqliteStateStore]:
    state = SqliteStateStore(tmp_path / "state.db")
    make_job(state, LOAD)
    yield state
    state.close()


def test_16_processes_stay_within_the_limit_and_follow_a_rate_change(
    sqlite_state: SqliteStateStore, api: tuple[str, Hits]
) -> None:
    address, hits = api
    seen = run_load_with_a_rate_change(sqlite_state, sqlite_state.url, address, hits, LOAD)
    assert seen["store_ops_per_token"] < 1.0  # blocks, not a round trip per token


def test_killed_or_frozen_holders_lose_their_tokens_when_the_lease_ends(
    sqlite_state: SqliteStateStore,
) -> None:
    run_dead_and_frozen_holders(sqlite_state, sqlite_state.url, LOAD.burst)
