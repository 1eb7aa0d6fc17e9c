"""What every benchmark shares: measuring a process tree, repeats, tables, arguments.

Measurement contract (:func:`run_measured`): the command runs as a child in its own
session. Wall time is taken around it; CPU time (user + system) and the largest single
process's peak RSS come from ``os.wait4`` of that child, which includes every descendant
the child waited for (the same numbers ``getrusage(RUSAGE_CHILDREN)`` deltas give, but
for this child alone, so earlier runs cannot inflate the peak). A sampler thread reads
``/proc`` every 50 ms and records the peak *sum* of RSS over the whole tree (a worker
slot and the coordinator at the same moment) and the CPU it saw per process, which
cross-checks that no descendant escaped being waited for.

Every script takes ``--size tiny|small|full``, ``--json`` and ``--repeat N`` and prints one
report: text tables by default, one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# the report types, re-exported for scripts that import everything from this module
from benchmarks.report import Report as Report
from benchmarks.report import Table as Table
from benchmarks.report import emit as emit

REPO = Path(__file__).resolve().parents[1]
SIZES = ("tiny", "small", "full")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "shardflow-bench"


# -- measuring a process tree -------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One measured run of a command (seconds, KiB)."""

    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kb: int  # the largest single process of the tree (wait4's ru_maxrss)
    tree_rss_kb: int  # the peak sum over the tree, sampled every 50 ms
    seen_cpu_s: float  # CPU the sampler saw (a lower bound; for the cross-check)
    returncode: int
    stdout: str = field(default="", repr=False)
    stderr: str = field(default="", repr=False)

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @classmethod
    def of(
        cls,
        wall: float,
        usage: Any,
        sampler: TreeSampler,
        returncode: int,
        stdout: str = "",
        stderr: str = "",
    ) -> Measured:
        """A run from its wall time, ``os.wait4``'s rusage and the tree sampler."""
        return cls(
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss_kb=int(usage.ru_maxrss),
            tree_rss_kb=sampler.peak_kb,
            seen_cpu_s=sum(sampler.cpu.values()),
            returncode=returncode,
            stdout=stdout,
            stderr=stderr,
        )

    def check(self, what: str) -> Measured:
        """Self, if the command exited 0; else RuntimeError with the tail of its output."""
        if self.returncode != 0:
            raise RuntimeError(
                f"{what} exited {self.returncode}\n--- stdout\n{self.stdout[-3000:]}"
                f"\n--- stderr\n{self.stderr[-6000:]}"
            )
        if self.seen_cpu_s > self.cpu_s * 1.1 + 0.2:
            # a descendant was not waited for, so wait4 missed its CPU: say so loudly
            print(
                f"warning: {what}: wait4 counted {self.cpu_s:.2f}s CPU but the sampler saw "
                f"{self.seen_cpu_s:.2f}s; some process escaped",
                file=sys.stderr,
            )
        return self


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(p) for p in f.read().split())
    return out


def _rss_and_cpu(pid: int) -> tuple[int, float] | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE_KB
        with open(f"/proc/{pid}/stat") as f:
            # fields after the parenthesised command name; utime and stime are 14 and 15
            fields = f.read().rsplit(")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None


class TreeSampler(threading.Thread):
    """Samples RSS and CPU of ``root`` and its descendants until :meth:`stop`."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.peak_kb = 0
        self.cpu: dict[int, float] = {}
        self.rss_kb: dict[int, int] = {}  # each process's own peak
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            total, todo = 0, [self.root]
            while todo:
                pid = todo.pop()
                sample = _rss_and_cpu(pid)
                if sample is not None:
                    total += sample[0]
                    self.cpu[pid] = max(self.cpu.get(pid, 0.0), sample[1])
                    self.rss_kb[pid] = max(self.rss_kb.get(pid, 0), sample[0])
                todo.extend(_children(pid))
            self.peak_kb = max(self.peak_kb, total)
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 1800.0,
) -> Measured:
    """Run ``argv`` to its end and measure it (see the module docstring).

    Output goes to temporary files (no pipe can fill up). On timeout the child's
    process group is killed and the result has returncode -9.
    """
    full_env = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=full_env, stdout=out, stderr=err, start_new_session=True
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        timer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            sampler.stop()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured.of(
            wall,
            usage,
            sampler,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 9)


def median_run(runs: Sequence[Measured]) -> Measured:
    """The per-field median of repeated runs (output of the median-wall run)."""
    if not runs:
        raise ValueError("no runs")
    by_wall = sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]
    return Measured(
        wall_s=statistics.median(r.wall_s for r in runs),
        user_s=statistics.median(r.user_s for r in runs),
        sys_s=statistics.median(r.sys_s for r in runs),
        max_rss_kb=int(statistics.median(r.max_rss_kb for r in runs)),
        tree_rss_kb=int(statistics.median(r.tree_rss_kb for r in runs)),
        seen_cpu_s=statistics.median(r.seen_cpu_s for r in runs),
        returncode=max(r.returncode for r in runs),
        stdout=by_wall.stdout,
        stderr=by_wall.stderr,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


# -- arguments, data and workspaces ---------------------------------------------------------


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """``--size``, ``--json``, ``--repeat`` (default 3, 1 at tiny) and ``--workdir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement")
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="data cache and scratch"
    )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.size == "tiny" else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    return args


def jsonl_dataset(workdir: Path, records: int, compression: str = "none") -> Path:
    """The seeded synthetic JSONL input of ``records`` lines, written once and cached."""
    from shardflow.testing.synthetic import write_jsonl

    suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
    path = workdir / "data" / f"users-{records}.jsonl{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        write_jsonl(tmp, records, seed=0, compression=compression)
        tmp.replace(path)
    return path


def fresh_dir(workdir: Path, name: str) -> Path:
    """An empty scratch folder ``workdir/runs/name`` (removed first if it exists)."""
    import shutil

    path = workdir / "runs" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def discard(folder: Path) -> None:
    """Remove a run's folder once its figures are read (full runs write gigabytes)."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def shardflow_argv(*args: str) -> list[str]:
    """The ``shardflow`` command with this interpreter (the venv's)."""
    return [sys.executable, "-m", "shardflow.cli.main", *args]


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def bench_env() -> dict[str, str]:
    """Environment for measured children: the repository importable, quiet logs."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            value = json.loads(line)
            assert isinstance(value, dict)
            return value
    raise ValueError(f"no JSON object in output:\n{text[-2000:]}")
