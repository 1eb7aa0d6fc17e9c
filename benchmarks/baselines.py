"""The hand-written baselines shardflow is measured against (run as their own process).

- ``plain``: one process reads the JSONL file line by line, parses each line with the
  standard ``json`` module, runs the handler and writes one Parquet file (in row groups
  of ``chunk`` rows, so memory stays flat as it would in a careful script).
- ``pool``: a ``ProcessPoolExecutor`` with one process per core; the file is cut into
  ``tasks`` byte ranges at line ends, each worker parses its range and returns an Arrow
  table, and the parent writes them in order into one Parquet file.
- ``pool-files``: the same pool, but each worker writes its range's result as a Parquet
  file and returns its name; the parent then combines the files in order into one (the
  forty lines a user would write for many small tasks: no tables cross the process
  boundary).
- ``pool-noop``: ``tasks`` submissions of a function that returns its argument, for the
  per-task overhead of the pool itself.

Usage: ``python -m benchmarks.baselines plain|pool|pool-noop ...``; prints one JSON line.
Nothing here is durable: a crash loses all work, which is the point of comparison.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.handlers import enrich


def plain(src: Path, dest: Path, chunk: int, compression: Any) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: Any = None
    rows: list[dict[str, Any]] = []
    total = 0
    with src.open("rb") as f:
        for line in f:
            rows.append(enrich(json.loads(line)))
            if len(rows) >= chunk:
                table = pa.Table.from_pylist(rows)
                if writer is None:
                    writer = pq.ParquetWriter(dest, table.schema, compression=compression)
                writer.write_table(table)
                total += len(rows)
                rows = []
    if rows:
        table = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(dest, table.schema, compression=compression)
        writer.write_table(table)
        total += len(rows)
    if writer is not None:
        writer.close()
    return total


def byte_ranges(src: Path, parts: int) -> list[tuple[int, int]]:
    """``parts`` ranges of about equal size, each starting at a line start."""
    size = src.stat().st_size
    cuts = [0]
    with src.open("rb") as f:
        for n in range(1, parts):
            f.seek(max(size * n // parts, cuts[-1]))
            f.readline()
            pos = f.tell()
            if pos < size and pos > cuts[-1]:
                cuts.append(pos)
    cuts.append(size)
    return list(itertools.pairwise(cuts))


def _pool_part(src: str, start: int, end: int) -> Any:
    import pyarrow as pa

    with open(src, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return pa.Table.from_pylist([enrich(json.loads(line)) for line in data.splitlines()])


def pool(src: Path, dest: Path, tasks: int, workers: int, compression: Any) -> int:
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(_pool_part, str(src), a, b) for a, b in byte_ranges(src, tasks)]
        return _combine((fut.result() for fut in futures), dest, compression)


def _combine(tables: Iterable[Any], dest: Path, compression: Any) -> int:
    """Write ``tables`` one after another into one Parquet file; the rows written."""
    import pyarrow.parquet as pq

    total = 0
    writer: Any = None
    for table in tables:
        if writer is None:
            writer = pq.ParquetWriter(dest, table.schema, compression=compression)
        writer.write_table(table)
        total += table.num_rows
    if writer is not None:
        writer.close()
    return total


def _pool_file_part(src: str, start: int, end: int, dest: str) -> str:
    import pyarrow.parquet as pq

    pq.write_table(_pool_part(src, start, end), dest, compression="zstd")
    return dest


def pool_files(src: Path, dest: Path, tasks: int, workers: int, compression: Any) -> int:
    import tempfile

    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            futures = [
                ex.submit(_pool_file_part, str(src), a, b, f"{tmp}/{n:07d}.parquet")
                for n, (a, b) in enumerate(byte_ranges(src, tasks))
            ]
            paths = [fut.result() for fut in futures]
        # the naive combine: every file read and written again
        return _combine((pq.read_table(path) for path in paths), dest, compression)


def _identity(x: int) -> int:
    return x


def pool_noop(tasks: int, workers: int) -> float:
    """Seconds to push ``tasks`` no-op submissions through a warm pool."""
    with ProcessPoolExecutor(max_workers=workers) as ex:
        list(ex.map(_identity, range(workers * 4)))  # start the workers first
        start = time.perf_counter()
        futures = [ex.submit(_identity, n) for n in range(tasks)]
        for fut in futures:
            fut.result()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    parser.add_argument("kind", choices=("plain", "pool", "pool-files", "pool-noop"))
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compression", default="zstd")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.kind == "plain":
        rows = plain(args.input, args.output, args.chunk, args.compression)
        out: dict[str, Any] = {"rows": rows}
    elif args.kind == "pool":
        rows = pool(args.input, args.output, args.tasks, args.workers, args.compression)
        out = {"rows": rows}
    elif args.kind == "pool-files":
        rows = pool_files(args.input, args.output, args.tasks, args.workers, args.compression)
        out = {"rows": rows}
    else:
        out = {"tasks": args.tasks, "seconds": pool_noop(args.tasks, args.workers)}
    out["wall_s"] = time.perf_counter() - start
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
