"""Workload 3, split: JSONL (plain and gzip) cut into batches of 10,000 records.

Each variant runs in its own measured process so its peak RSS is its own:

- ``floor``: read the same file line by line in Python and count the lines (through
  ``gzip.open`` for the compressed file): what any Python reader pays at least;
- ``split``: :func:`shardflow.split.plan.split_input` into a local object store, item keys
  ``batch:ordinal`` (plain files become byte ranges; compressed ones are re-written as
  batch objects, since a gzip stream cannot be entered in the middle);
- ``split, id_field``: the same with ``id_field: id``, which adds the duplicate-key check.

Rates use the time measured inside the process (interpreter start excluded) and the
uncompressed size. Sizes: tiny 20k records; small 1M; full 1M and 10M.

Usage: ``python -m benchmarks.split_throughput --size tiny|small|full [--json]``
"""

from __future__ import annotations

import argparse
import gzip
import json
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

SIZES = {"tiny": (20_000,), "small": (1_000_000,), "full": (1_000_000, 10_000_000)}
BATCH = 10_000
VARIANTS = ("floor", "split", "split-id")
LABELS = {"floor": "read lines (floor)", "split": "split", "split-id": "split, id_field"}


def child(argv: Sequence[str]) -> int:
    """One variant in this process; prints a JSON line with its own timing."""
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.variant != "floor":
        # imported before the clock starts: start-up is not split throughput
        from shardflow.layout import Layout
        from shardflow.objectstore.local import LocalObjectStore
        from shardflow.split.plan import split_input
        from shardflow.split.spec import SplitSpec
    start = time.perf_counter()
    if args.variant == "floor":
        opener = gzip.open if args.input.suffix == ".gz" else open
        lines = nbytes = 0
        with opener(args.input, "rb") as f:
            for line in f:
                lines += 1
                nbytes += len(line)
        out: dict[str, float] = {"records": lines, "bytes": nbytes, "batches": 0}
    else:
        spec = SplitSpec(
            paths=(str(args.input),),
            format="jsonl",
            id_field="id" if args.variant == "split-id" else None,
            batch_records=BATCH,
        )
        result = split_input(
            spec,
            job_id="bench",
            store=LocalObjectStore(args.store),
            layout=Layout("bench"),
            now=time.time(),
        )
        out = {"records": result.records, "bytes": 0, "batches": len(result.batches)}
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--child"]:
        return child(raw[1:])
    args = parse_args(__doc__ or "", raw)
    table = Table(
        f"split into batches of {BATCH:,} records",
        ["input", "variant", "records/s", "MB/s", "÷ floor", "seconds", "batches", "peak RSS MiB"],
    )
    data: dict[str, object] = {}
    for records in SIZES[args.size]:
        for compression in ("none", "gzip"):
            path = jsonl_dataset(args.workdir, records, compression)
            plain_size = jsonl_dataset(args.workdir, records).stat().st_size
            label = f"{records:,} {'gzip' if compression == 'gzip' else 'plain'}"
            seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
            runs: dict[str, list[Measured]] = {v: [] for v in VARIANTS}
            batches: dict[str, int] = {}
            for rep in range(args.repeat):
                for variant in VARIANTS:
                    folder = fresh_dir(args.workdir, f"split-{variant}-{rep}")
                    m = run_measured(
                        python_argv(
                            "benchmarks.split_throughput",
                            "--child",
                            variant,
                            "--input",
                            str(path),
                            "--store",
                            str(folder / "store"),
                        ),
                        cwd=folder,
                        env=bench_env(),
                    ).check(f"split {variant}")
                    out = last_json_line(m.stdout)
                    if out["records"] != records:
                        raise RuntimeError(f"{variant} saw {out['records']} of {records} records")
                    seconds[variant].append(float(out["seconds"]))
                    runs[variant].append(m)
                    discard(folder)
                    batches[variant] = int(out["batches"])
            floor = statistics.median(seconds["floor"])
            for variant in VARIANTS:
                s = statistics.median(seconds[variant])
                med = median_run(runs[variant])
                table.rows.append(
                    [
                        label,
                        LABELS[variant],
                        records / s,
                        plain_size / s / 1e6,
                        s / floor,
                        s,
                        batches[variant],
                        med.max_rss_kb / 1024,
                    ]
                )
                data[f"{label} {variant}"] = {
                    "seconds": s,
                    "records_per_s": records / s,
                    "max_rss_kb": med.max_rss_kb,
                }
            print(f"split_throughput: {label} done", file=sys.stderr)
    table.notes.append(
        "MB/s is of the uncompressed JSONL; seconds are measured inside the process "
        "(interpreter start excluded); peak RSS is the process's ru_maxrss."
    )
    report = Report(
        name="split_throughput",
        title="3. Split throughput beside the floor of reading lines in Python",
        size=args.size,
        repeat=args.repeat,
        tables=[table],
        data=data,
    )
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
