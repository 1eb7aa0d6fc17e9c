"""Workload 1, map overhead: the same handler over generated JSONL records, three ways.

- ``plain``: one process, line by line, stdlib ``json``, one Parquet file
  (:mod:`benchmarks.baselines`);
- ``ProcessPool``: one process per core over byte ranges, the parent writes one file;
- ``shardflow run`` on the embedded default (2 slots, SQLite state, local store), with
  durable commits; once with item keys ``batch:ordinal`` and once with ``id_field: id``
  (which adds the duplicate-key check to the split).

Reports wall, CPU (the whole process tree), peak RSS, ratios to the plain script and
shardflow's own cost CPU(shardflow) / CPU(plain) − 1 (the spec allows 5%), and
shardflow's phases from its own events. Runs are interleaved across repeats so that a
burst of load from elsewhere hits every variant alike.

Usage: ``python -m benchmarks.map_overhead --size tiny|small|full [--json]``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

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

# records, records per task
SIZES = {"tiny": (10_000, 5_000), "small": (200_000, 10_000), "full": (1_000_000, 10_000)}
OWN_COST_TARGET = 0.05


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    records, per_task = SIZES[args.size]
    tasks = records // per_task
    data = jsonl_dataset(args.workdir, records)
    workers = os.cpu_count() or 1
    runs: dict[str, list[Measured]] = {}
    timelines: dict[str, list[Timeline]] = {}
    rows_out: dict[str, int] = {}
    for rep in range(args.repeat):
        folder = fresh_dir(args.workdir, f"map-plain-{rep}")
        m = run_measured(
            python_argv(
                "benchmarks.baselines",
                "plain",
                "--input",
                str(data),
                "--output",
                str(folder / "out.parquet"),
                "--chunk",
                str(per_task),
            ),
            cwd=folder,
            env=bench_env(),
        ).check("plain")
        runs.setdefault("plain script", []).append(m)
        rows_out["plain script"] = last_json_line(m.stdout)["rows"]
        discard(folder)

        folder = fresh_dir(args.workdir, f"map-pool-{rep}")
        m = run_measured(
            python_argv(
                "benchmarks.baselines",
                "pool",
                "--input",
                str(data),
                "--output",
                str(folder / "out.parquet"),
                "--tasks",
                str(tasks),
                "--workers",
                str(workers),
            ),
            cwd=folder,
            env=bench_env(),
        ).check("pool")
        runs.setdefault(f"ProcessPool ({workers} procs)", []).append(m)
        rows_out[f"ProcessPool ({workers} procs)"] = last_json_line(m.stdout)["rows"]
        discard(folder)

        for label, extra in (
            ("shardflow run", {}),
            ("shardflow run, id_field", {"input": {"id_field": "id"}}),
        ):
            folder = fresh_dir(args.workdir, f"map-sf-{len(extra)}-{rep}")
            write_job(
                folder,
                name="bench-map",
                handler="enrich",
                input_path=data,
                records_per_task=per_task,
                extra=extra,
            )
            m, summary = run_job(folder)
            runs.setdefault(label, []).append(m)
            rows_out[label] = int(summary["rows"])
            timelines.setdefault(label, []).append(job_timeline(folder))
            discard(folder)
        print(f"map_overhead: repeat {rep + 1}/{args.repeat} done", file=sys.stderr)

    for label, n in rows_out.items():
        if n != records:
            raise RuntimeError(f"{label} wrote {n} rows, expected {records}")
    med = {label: median_run(ms) for label, ms in runs.items()}
    tl = {label: median_timeline(ts) for label, ts in timelines.items()}
    report = build_report(args.size, args.repeat, records, tasks, med, tl, runs)
    emit(report, args.json)
    return 0


def build_report(
    size: str,
    repeat: int,
    records: int,
    tasks: int,
    med: dict[str, Measured],
    tl: dict[str, Timeline],
    runs: dict[str, list[Measured]],
) -> Report:
    base = med["plain script"]
    main_table = Table(
        f"{records:,} JSONL records in {tasks} tasks of {records // tasks:,}",
        [
            "runner",
            "wall s",
            "CPU s",
            "wall ÷ plain",
            "CPU ÷ plain",
            "records/s",
            "peak RSS MiB (largest proc)",
            "peak RSS MiB (sum)",
        ],
    )
    for label, m in med.items():
        main_table.rows.append(
            [
                label,
                m.wall_s,
                m.cpu_s,
                m.wall_s / base.wall_s,
                m.cpu_s / base.cpu_s,
                records / m.wall_s,
                m.max_rss_kb / 1024,
                m.tree_rss_kb / 1024,
            ]
        )
    main_table.notes.append(
        "CPU is user + system of the whole process tree (os.wait4 of the child, which "
        "includes every process it waited for); peak RSS (sum) is sampled every 50 ms."
    )
    spread = {
        label: (min(m.wall_s for m in ms), max(m.wall_s for m in ms)) for label, ms in runs.items()
    }
    main_table.notes.append(
        "wall range over repeats: "
        + "; ".join(f"{k} {lo:.2f}–{hi:.2f}s" for k, (lo, hi) in spread.items())
    )
    own = Table(
        "shardflow's own cost: CPU(shardflow) / CPU(plain) − 1 (spec: at most 5%)",
        ["runner", "own cost", "within 5%", "CPU in attempts s", "CPU outside attempts s"],
    )
    phases = Table(
        "shardflow's phases (from its events and task rows), seconds",
        [
            "runner",
            "total wall",
            "start-up + exit",
            "split",
            "slot start",
            "map",
            "aggregate",
            "mean attempt ms",
            "mean lease→commit ms",
        ],
    )
    per_run: dict[str, dict[str, Any]] = {
        label: {
            "wall_s": m.wall_s,
            "cpu_s": m.cpu_s,
            "cpu_ratio": m.cpu_s / base.cpu_s,
            "max_rss_kb": m.max_rss_kb,
            "tree_rss_kb": m.tree_rss_kb,
            "walls": [r.wall_s for r in runs[label]],
            "cpus": [r.cpu_s for r in runs[label]],
        }
        for label, m in med.items()
    }
    for label, t in tl.items():
        m = med[label]
        cost = m.cpu_s / base.cpu_s - 1
        own.rows.append(
            [
                label,
                f"{cost:+.1%}",
                "yes" if cost <= OWN_COST_TARGET else "no",
                t.attempts_cpu_s,
                m.cpu_s - t.attempts_cpu_s,
            ]
        )
        inside = t.split_s + t.map_s + t.aggregate_s
        phases.rows.append(
            [
                label,
                m.wall_s,
                m.wall_s - inside,
                t.split_s,
                t.slot_start_s,
                t.map_s,
                t.aggregate_s,
                t.task_wall_ms,
                t.lease_to_commit_ms,
            ]
        )
        per_run[label].update(timeline=t.as_dict(), own_cost=cost)
    own.notes.append(
        "CPU in attempts is the sum of the workers' per-attempt cpu_ms (metrics.cpu_ms); "
        "outside is everything else: interpreter start-up and imports of the CLI and each "
        "slot, split, leasing, commits, polling and aggregation."
    )
    phases.notes.append(
        "map runs from slots_started to the last commit; start-up + exit is the wall time "
        "outside submitted → finished (interpreter start, imports, waiting for slots to exit)."
    )
    return Report(
        name="map_overhead",
        title="1. Map overhead: shardflow vs a plain script vs a process pool",
        size=size,
        repeat=repeat,
        tables=[main_table, own, phases],
        data={"records": records, "tasks": tasks, "plain_cpu_s": base.cpu_s, "runs": per_run},
    )


if __name__ == "__main__":
    sys.exit(main())
