"""Workload 2, per-task overhead: no-op tasks through the local executor, durably.

A JSONL input of N lines is split with ``batching.records: 1`` into N tasks whose handler
returns its record, and ``shardflow run`` drives them on 2 local slots. Each task is a
full cycle: receive the message, lease (fenced write), read the task manifest, open a
checkpoint (SQLite, ``synchronous=FULL``), write the result Parquet, publish the marker
(create-only, fsync), commit the task row with its metrics, delete the message.

Reported: tasks/s over the map phase, slot-ms per task (map wall × slots ÷ tasks: all a
slot spends per task), the attempt's own wall time (Task.metrics ``wall_ms``, which
stops before the commit) and lease→commit time from the task rows, beside a warm
``ProcessPoolExecutor`` pushing the same number of no-op calls in the same run.

Usage: ``python -m benchmarks.task_overhead --size tiny|small|full [--json]``
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence

from benchmarks.common import (
    Measured,
    bench_env,
    discard,
    fresh_dir,
    jsonl_dataset,
    last_json_line,
    median_run,
    parse_args,
    python_argv,
    run_measured,
)
from benchmarks.report import (
    Report,
    Table,
    emit,
)
from benchmarks.sfjob import Timeline, job_timeline, median_timeline, run_job, write_job

SIZES = {"tiny": 100, "small": 2_000, "full": 10_000}
SLOTS = 2
# per-task overhead measured by others on this machine (see docs/benchmarks.md)
REFERENCE_MS = {"ProcessPool (reference)": 0.28, "Ray (reference)": 1.3, "Dask (reference)": 3.7}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    tasks = SIZES[args.size]
    data = jsonl_dataset(args.workdir, tasks)
    workers = os.cpu_count() or 1
    sf_runs: list[Measured] = []
    timelines: list[Timeline] = []
    pool_s: list[float] = []
    for rep in range(args.repeat):
        folder = fresh_dir(args.workdir, f"tasks-{rep}")
        write_job(
            folder,
            name="bench-tasks",
            handler="echo",
            input_path=data,
            records_per_task=1,
            slots=SLOTS,
        )
        m, summary = run_job(folder)
        if summary["tasks"]["SUCCEEDED"] != tasks:
            raise RuntimeError(f"expected {tasks} succeeded tasks: {summary['tasks']}")
        sf_runs.append(m)
        timelines.append(job_timeline(folder))
        pm = run_measured(
            python_argv(
                "benchmarks.baselines",
                "pool-noop",
                "--tasks",
                str(tasks),
                "--workers",
                str(workers),
            ),
            cwd=folder,
            env=bench_env(),
        ).check("pool-noop")
        pool_s.append(float(last_json_line(pm.stdout)["seconds"]))
        discard(folder)
        print(f"task_overhead: repeat {rep + 1}/{args.repeat} done", file=sys.stderr)
    m = median_run(sf_runs)
    t = median_timeline(timelines)
    pool_ms = statistics.median(pool_s) * 1000 / tasks
    per_task = Table(
        f"{tasks:,} no-op tasks on {SLOTS} local slots (durable commits)",
        ["runner", "tasks/s", "ms per task (wall)", "slot-ms per task", "durable"],
    )
    slot_ms = t.map_s * SLOTS * 1000 / tasks
    per_task.rows.append(
        ["shardflow (map phase)", tasks / t.map_s, t.map_s * 1000 / tasks, slot_ms, "yes"]
    )
    per_task.rows.append(
        [
            f"ProcessPool ({workers} procs), this run",
            1000 / pool_ms,
            pool_ms,
            pool_ms * workers,
            "no",
        ]
    )
    for label, ms in REFERENCE_MS.items():
        per_task.rows.append([label, 1000 / ms, ms, None, "no"])
    per_task.notes.append(
        "slot-ms per task = map wall × slots ÷ tasks: everything a slot spends on one task "
        "(receive, lease, manifest read, checkpoint, result write, marker, commit, delete)."
    )
    per_task.notes.append(
        "reference rows are the figures measured on this machine for the issue (not re-run)."
    )
    inside = Table(
        "where a task's time goes (means from the task rows)",
        [
            "attempt wall ms (metrics)",
            "attempt CPU ms (metrics)",
            "lease→commit ms",
            "slot-ms per task",
            "outside lease→commit ms",
        ],
        [
            [
                t.task_wall_ms,
                t.task_cpu_ms,
                t.lease_to_commit_ms,
                slot_ms,
                slot_ms - t.lease_to_commit_ms,
            ]
        ],
        [
            "the attempt's wall_ms stops before the commit; lease→commit spans the lease write "
            "to the commit write; the rest is receiving and deleting the queue message."
        ],
    )
    whole = Table(
        "the whole run",
        [
            "wall s",
            "CPU s",
            "CPU ms per task",
            "split s",
            "map s",
            "aggregate s",
            "peak RSS MiB (largest proc)",
            "peak RSS MiB (sum)",
        ],
        [
            [
                m.wall_s,
                m.cpu_s,
                m.cpu_s * 1000 / tasks,
                t.split_s,
                t.map_s,
                t.aggregate_s,
                m.max_rss_kb / 1024,
                m.tree_rss_kb / 1024,
            ]
        ],
    )
    report = Report(
        name="task_overhead",
        title="2. Per-task overhead: no-op tasks through the local executor",
        size=args.size,
        repeat=args.repeat,
        tables=[per_task, inside, whole],
        data={
            "tasks": tasks,
            "timeline": t.as_dict(),
            "wall_s": m.wall_s,
            "cpu_s": m.cpu_s,
            "slot_ms_per_task": slot_ms,
            "pool_ms_per_task": pool_ms,
        },
    )
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
