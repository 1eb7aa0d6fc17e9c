"""Workload 4, aggregation: N committed task outputs of 500 rows merged into one dataset.

The N results are built through the real code path once: a job of N tasks of 500
records with the map handler runs under ``shardflow run`` (its own aggregation, which
overlaps the map, is the first data point: the last commit to ``finished``). Then, per
repeat and output format, the job's ``output/`` objects are deleted and
:func:`shardflow.aggregate.run.aggregate_job` runs alone in a measured process over the
committed markers: read every result once, verify its checksum, stream it into the output
in task order, then the failures and rejects files, ``_MANIFEST.json`` and ``_SUCCESS``.

Reported: outputs per minute (issue 14: 200,000 per minute, 10,000 outputs in 3 s), rows/s
and peak RSS (at most 256 MB). Sizes: tiny 50 outputs, small 2,000, full 10,000.

Usage: ``python -m benchmarks.aggregation --size tiny|small|full [--json]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

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
from benchmarks.sfjob import JOB_ID, job_timeline, run_job, write_job

SIZES = {"tiny": 50, "small": 2_000, "full": 10_000}
ROWS_PER_OUTPUT = 500
TARGET_PER_MINUTE = 200_000
FORMATS = ("parquet", "sqlite")


def child(argv: Sequence[str]) -> int:
    """Aggregate the prepared job once in this process; print a JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--format", choices=FORMATS, required=True)
    args = parser.parse_args(argv)
    import pyarrow.parquet  # noqa: F401  (imported before the clock starts)

    from shardflow.aggregate.run import AggregateSpec, aggregate_job
    from shardflow.layout import Layout
    from shardflow.objectstore.local import LocalObjectStore
    from shardflow.split.spec import SplitSpec
    from shardflow.statestore.sqlite import SqliteStateStore

    workspace = args.folder / ".shardflow"
    state = SqliteStateStore(workspace / "state.db")
    store = LocalObjectStore(workspace / "store")
    layout = Layout(JOB_ID)
    store.delete_prefix(layout.output_prefix())
    scratch = workspace / "scratch" / "bench-aggregate"
    shutil.rmtree(scratch, ignore_errors=True)
    start = time.perf_counter()
    manifest = aggregate_job(
        job_id=JOB_ID,
        state=state,
        store=store,
        spec=AggregateSpec(output_format=args.format),
        split=SplitSpec(paths=(), format="jsonl"),
        scratch=scratch,
        now=time.time,
    )
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rows": manifest.rows}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--child"]:
        return child(raw[1:])
    args = parse_args(__doc__ or "", raw)
    outputs = SIZES[args.size]
    records = outputs * ROWS_PER_OUTPUT
    data = jsonl_dataset(args.workdir, records)
    folder = fresh_dir(args.workdir, "aggregate")
    write_job(
        folder,
        name="bench-aggregate",
        handler="enrich",
        input_path=data,
        records_per_task=ROWS_PER_OUTPUT,
    )
    prep, summary = run_job(folder)
    if summary["tasks"]["SUCCEEDED"] != outputs:
        raise RuntimeError(f"expected {outputs} succeeded tasks: {summary['tasks']}")
    in_run = job_timeline(folder).aggregate_s
    print(f"aggregation: {outputs} outputs prepared in {prep.wall_s:.1f}s", file=sys.stderr)
    seconds: dict[str, list[float]] = {f: [] for f in FORMATS}
    runs: dict[str, list[Measured]] = {f: [] for f in FORMATS}
    for _ in range(args.repeat):
        for fmt in FORMATS:
            m = run_measured(
                python_argv(
                    "benchmarks.aggregation", "--child", "--folder", str(folder), "--format", fmt
                ),
                cwd=folder,
                env=bench_env(),
            ).check(f"aggregate {fmt}")
            out = last_json_line(m.stdout)
            if out["rows"] != records:
                raise RuntimeError(f"aggregation wrote {out['rows']} rows, expected {records}")
            seconds[fmt].append(float(out["seconds"]))
            runs[fmt].append(m)
    discard(folder)
    table = Table(
        f"{outputs:,} task outputs of {ROWS_PER_OUTPUT} rows into one dataset",
        ["run", "seconds", "outputs/min", "over 200,000/min", "rows/s", "CPU s", "peak RSS MiB"],
    )
    per_min = outputs / in_run * 60
    table.rows.append(
        [
            "parquet, inside `shardflow run`",
            in_run,
            per_min,
            "yes" if per_min > TARGET_PER_MINUTE else "no",
            records / in_run,
            None,
            None,
        ]
    )
    data_out: dict[str, object] = {"outputs": outputs, "in_run_s": in_run}
    for fmt in FORMATS:
        s = statistics.median(seconds[fmt])
        med = median_run(runs[fmt])
        per_min = outputs / s * 60
        table.rows.append(
            [
                f"{fmt}, aggregate_job alone",
                s,
                per_min,
                "yes" if per_min > TARGET_PER_MINUTE else "no",
                records / s,
                med.cpu_s,
                med.max_rss_kb / 1024,
            ]
        )
        data_out[fmt] = {
            "seconds": s,
            "outputs_per_min": per_min,
            "max_rss_kb": med.max_rss_kb,
            "cpu_s": med.cpu_s,
        }
    table.notes.append(
        "alone: timed inside the process from discovery to _SUCCESS (imports excluded); "
        "CPU and peak RSS are of that whole process. Inside the run: the last task commit "
        "to the job's `finished` event."
    )
    table.notes.append("reference: polars merges 10,000 small Parquet files in 1.9 s.")
    report = Report(
        name="aggregation",
        title="4. Aggregation: many task outputs into one Parquet file (and SQLite)",
        size=args.size,
        repeat=args.repeat,
        tables=[table],
        data=data_out,
    )
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
