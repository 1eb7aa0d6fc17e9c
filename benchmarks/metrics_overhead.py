"""Workload 7, metrics overhead (issue 11): what per-attempt metrics cost, as % of task time.

Per attempt the worker makes two ``getrusage`` calls (:class:`AttemptMetrics`), builds a
small dict, stores it on the task row (``Task.metrics``) and adds its additive values to
the job's counters (``metrics.*``) in the commit's transaction. Measured here:

- micro: the two ``getrusage`` calls, and ``AttemptMetrics()`` + ``finish()``;
- the commit: ``commit_task`` on the SQLite store with and without the metrics and
  their counters, alternating, on a fresh database;
- in context: the mean lease→commit time of real tasks from a map job (10,000-record
  tasks) and a no-op job (1-record tasks) run here, and the cost as % of it.

Usage: ``python -m benchmarks.metrics_overhead --size tiny|small|full [--json]``
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    discard,
    fresh_dir,
    jsonl_dataset,
    parse_args,
)
from benchmarks.report import (
    Report,
    Table,
    emit,
)
from benchmarks.sfjob import job_timeline, run_job, write_job

# micro-benchmark calls, commits per arm, (map records, per task), no-op tasks
SIZES = {
    "tiny": (20_000, 200, (10_000, 5_000), 50),
    "small": (200_000, 1_000, (100_000, 10_000), 500),
    "full": (1_000_000, 2_000, (200_000, 10_000), 2_000),
}


def micro(calls: int) -> dict[str, float]:
    """Seconds per call of the collection itself."""
    from shardflow.worker.metrics import AttemptMetrics, metric_counters

    getrusage, me = resource.getrusage, resource.RUSAGE_SELF
    start = time.perf_counter()
    for _ in range(calls):
        getrusage(me)
        getrusage(me)
    two_calls = (time.perf_counter() - start) / calls
    start = time.perf_counter()
    for _ in range(calls):
        m = AttemptMetrics()
        out = m.finish(items=10_000, failures=(), handler_metrics={}, limiter_metrics={})
        metric_counters(out)
    collect = (time.perf_counter() - start) / calls
    return {"getrusage_x2_s": two_calls, "collect_s": collect}


def commits(count: int) -> dict[str, float]:
    """Median seconds of one commit_task with and without metrics (SQLite, NORMAL)."""
    from shardflow.models import Task
    from shardflow.statestore.base import commit_task, lease_task
    from shardflow.statestore.sqlite import SqliteStateStore
    from shardflow.worker.metrics import AttemptMetrics, metric_counters

    metrics = AttemptMetrics().finish(
        items=10_000, failures=(), handler_metrics={}, limiter_metrics={}
    )
    timings: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="sfb-metrics-") as tmp:
        state = SqliteStateStore(Path(tmp) / "state.db")
        from shardflow.models import Job

        state.create_job(Job("bench", "bench", created_at=time.time()))
        state.register_tasks(
            [Task("bench", f"t{n:06d}", f"b{n:06d}", items_total=10_000) for n in range(count * 2)]
        )
        for n in range(count * 2):
            with_metrics = n % 2 == 0
            task = lease_task(state, "bench", f"t{n:06d}", owner="s", ttl=60, now=time.time())
            assert task is not None
            start = time.perf_counter()
            commit_task(
                state,
                task,
                now=time.time(),
                result_attempt=1,
                items_total=10_000,
                items_succeeded=10_000,
                items_failed=0,
                items_rejected=0,
                rows=10_000,
                metrics=metrics if with_metrics else None,
                metric_counters=metric_counters(metrics) if with_metrics else None,
            )
            timings[with_metrics].append(time.perf_counter() - start)
        state.close()
    return {
        "with_s": statistics.median(timings[True]),
        "without_s": statistics.median(timings[False]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    calls, commit_count, (records, per_task), noop_tasks = SIZES[args.size]
    micro_runs = [micro(calls) for _ in range(args.repeat)]
    commit_runs = [commits(commit_count) for _ in range(args.repeat)]
    two = statistics.median(r["getrusage_x2_s"] for r in micro_runs)
    collect = statistics.median(r["collect_s"] for r in micro_runs)
    with_s = statistics.median(r["with_s"] for r in commit_runs)
    without_s = statistics.median(r["without_s"] for r in commit_runs)
    extra_commit = with_s - without_s
    micro_table = Table(
        "cost of collecting an attempt's metrics",
        ["what", "µs per attempt"],
        [
            ["two getrusage calls", two * 1e6],
            ["AttemptMetrics() + finish() + metric_counters()", collect * 1e6],
            ["commit_task without metrics (SQLite)", without_s * 1e6],
            ["commit_task with metrics and metrics.* counters", with_s * 1e6],
            ["extra for storing the metrics in the commit", extra_commit * 1e6],
        ],
        [f"medians over {calls:,} calls and {commit_count:,} commits per arm (alternating)"],
    )
    context = Table(
        "as % of task time (tasks run here; lease→commit means from their rows)",
        ["job", "tasks", "mean lease→commit ms", "collection %", "collection + commit %"],
    )
    data: dict[str, object] = {
        "micro": {"getrusage_x2_s": two, "collect_s": collect},
        "commit": {"with_s": with_s, "without_s": without_s},
    }
    jobs = (
        (f"map handler, {per_task} records/task", records, per_task, "enrich"),
        ("no-op, 1 record/task", noop_tasks, 1, "echo"),
    )
    for label, n, per, handler in jobs:
        spans = []
        for rep in range(args.repeat):
            folder = fresh_dir(args.workdir, f"metrics-{handler}-{rep}")
            write_job(
                folder,
                name="bench-metrics",
                handler=handler,
                input_path=jsonl_dataset(args.workdir, n),
                records_per_task=per,
            )
            run_job(folder)
            spans.append(job_timeline(folder))
            discard(folder)
        span_ms = statistics.median(t.lease_to_commit_ms for t in spans)
        tasks = spans[0].tasks
        context.rows.append(
            [
                label,
                tasks,
                span_ms,
                f"{collect * 1e3 / span_ms:.4%}",
                f"{(collect + max(extra_commit, 0)) * 1e3 / span_ms:.3%}",
            ]
        )
        data[label] = {"lease_to_commit_ms": span_ms, "tasks": tasks}
    context.notes.append(
        "collection: getrusage ×2 and the dict; + commit: also the larger task row and the "
        "extra counter rows written in the commit's transaction."
    )
    report = Report(
        name="metrics_overhead",
        title="7. Metrics overhead: per-attempt metrics as a share of task time",
        size=args.size,
        repeat=args.repeat,
        tables=[micro_table, context],
        data=data,
    )
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
