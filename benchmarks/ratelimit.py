"""Workload 8, rate limiter (issue 7): overhead per acquire and store operations per
1,000 tokens at 2, 16 and 64 workers.

Workers are **threads** of this process, each with its own :class:`TokenClient` and its
own connection to one SQLite state store (WAL) in the work folder: they contend on the
bucket row through SQLite's locks exactly as worker processes would, while the figures
stay cheap to take on a 2-core machine (64 processes would measure the scheduler). Each
worker calls ``acquire("api")`` in a tight loop, so every figure is the limiter's own.

Two cases per worker count:

- **plentiful**: rate and burst of 10⁶, so nobody waits: CPU per acquire (process CPU
  time over tokens, every thread and the SQLite work included), latency percentiles,
  and store operations per 1,000 tokens (blocks grow to amortise the store);
- **limited**: a rate of 2,000/s (burst the same): the bucket is the bottleneck;
  achieved rate against the limit, and store reads, writes and conflicts per 1,000
  tokens, which is what the bucket row costs when every worker queues on it.

The default lease period (5 s) is used; at ``--size tiny`` the runs last one second, so
the blocks' growth phase weighs more and the store figures are pessimistic.

Usage: ``python benchmarks/ratelimit.py --quick`` (the tiny size, under 20 s), or
``python -m benchmarks.ratelimit --size tiny|small|full [--json] [--state URL]``.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Report, Table, emit, fresh_dir, parse_args, percentile

WORKERS = (2, 16, 64)
SECONDS = {"tiny": 1.0, "small": 3.0, "full": 10.0}  # per case and run
CASES = {"plentiful": (1e6, 1e6), "limited": (2000.0, 2000.0)}  # rate, burst
JOB, NAME = "bench-rl", "api"


def open_state(url: str) -> Any:
    from shardflow.backends import open_state_store

    return open_state_store(url)


def setup(url: str, rate: float, burst: float) -> None:
    """A fresh job whose one limit has ``rate`` and ``burst``."""
    from shardflow.models import Job
    from shardflow.ratelimit.control import ensure_buckets

    state = open_state(url)
    state.delete_job(JOB)
    state.delete_buckets(f"{JOB}/")
    section = {NAME: {"rate": rate, "burst": burst}}
    state.create_job(Job(job_id=JOB, name="bench", config={"config": {"rate_limits": section}}))
    ensure_buckets(state, JOB, {NAME: (rate, burst)}, time.time())
    state.close()


def run_case(url: str, workers: int, seconds: float) -> dict[str, float]:
    """``workers`` threads acquiring one token at a time for ``seconds``."""
    from shardflow.ratelimit.client import TokenClient

    states = [open_state(url) for _ in range(workers)]
    clients = [TokenClient(s, JOB, [NAME], owner=f"b{i}") for i, s in enumerate(states)]
    latencies: list[list[float]] = [[] for _ in range(workers)]
    go = threading.Barrier(workers + 1)
    stop = threading.Event()

    def work(i: int) -> None:
        client, mine, clock = clients[i], latencies[i], time.perf_counter
        go.wait()
        while not stop.is_set():
            started = clock()
            client.acquire(NAME)
            mine.append(clock() - started)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    go.wait()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    stop.wait(seconds)  # the run's length, not a synchronisation
    stop.set()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    totals: Counter[str] = Counter()
    for client, state in zip(clients, states, strict=True):
        client.close()
        totals.update(client.stats)
        state.close()
    every = sorted(x for mine in latencies for x in mine)
    tokens = max(1.0, totals["tokens"])
    per_k = 1000.0 / tokens
    return {
        "tokens_per_s": totals["tokens"] / wall,
        "cpu_us_per_acquire": cpu / tokens * 1e6,
        "p50_us": percentile(every, 50) * 1e6,
        "p99_us": percentile(every, 99) * 1e6,
        "reads_per_1k": totals["reads"] * per_k,
        "writes_per_1k": totals["writes"] * per_k,
        "conflicts_per_1k": totals["conflicts"] * per_k,
        "ops_per_1k": (totals["reads"] + totals["writes"]) * per_k,
        "mean_block": totals["granted"] / max(1.0, totals["blocks"]),
    }


def median_of(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main(argv: Sequence[str] | None = None) -> None:
    def extra(parser: Any) -> None:
        parser.add_argument("--quick", action="store_true", help="the tiny size (for CI)")
        parser.add_argument("--state", default=None, help="a state store URL (default: SQLite)")

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    size, repeat = ("tiny", 1) if args.quick else (args.size, args.repeat)
    seconds = SECONDS[size]
    url = args.state or str(fresh_dir(args.workdir, "ratelimit") / "state.db")
    data: dict[str, Any] = {"seconds": seconds, "state": "sqlite" if not args.state else url}
    plentiful = Table(
        "Plentiful tokens (rate 10⁶/s): the limiter's own cost",
        [
            "workers",
            "acquires/s",
            "CPU µs per acquire",
            "p50 µs",
            "p99 µs",
            "store ops / 1k tokens",
            "mean block",
        ],
    )
    limited = Table(
        "Limited (rate 2,000/s, burst 2,000): workers queue on one bucket row",
        [
            "workers",
            "achieved / limit",
            "reads / 1k",
            "writes / 1k",
            "conflicts / 1k",
            "store ops / 1k tokens",
            "mean block",
        ],
    )
    for case, (rate, burst) in CASES.items():
        for workers in WORKERS:
            runs = []
            for _ in range(repeat):
                setup(url, rate, burst)
                runs.append(run_case(url, workers, seconds))
            r = median_of(runs)
            data[f"{case}_{workers}"] = r
            print(f"{case} x{workers}: {r['tokens_per_s']:,.0f} tokens/s", file=sys.stderr)
            if case == "plentiful":
                plentiful.rows.append(
                    [
                        workers,
                        r["tokens_per_s"],
                        r["cpu_us_per_acquire"],
                        r["p50_us"],
                        r["p99_us"],
                        r["ops_per_1k"],
                        r["mean_block"],
                    ]
                )
            else:
                limited.rows.append(
                    [
                        workers,
                        f"{r['tokens_per_s'] / rate:.1%}",
                        r["reads_per_1k"],
                        r["writes_per_1k"],
                        r["conflicts_per_1k"],
                        r["ops_per_1k"],
                        r["mean_block"],
                    ]
                )
    note = (
        f"workers are threads with one SQLite connection each; {seconds:g} s per run; "
        "lease period 5 s"
    )
    plentiful.notes.append(note)
    limited.notes.append(
        "achieved includes the initial burst; reads and writes per 1,000 tokens spent"
    )
    report = Report("ratelimit", "8. Rate limiter", size, repeat, [plentiful, limited], data)
    emit(report, args.json)


if __name__ == "__main__":
    main()
