"""Run every benchmark at one size and write one Markdown report.

Each benchmark runs as ``python -m benchmarks.<name> --size S --json --repeat N`` (its
progress goes to stderr); its JSON report becomes Markdown tables. The machine's load is
recorded alongside: the load average every 5 s, and the CPU the rest of the machine
used while the suite ran (busy time from /proc/stat minus the suite's own CPU), because
other people's work on a 2-core machine changes every wall-time figure.

Usage::

    python -m benchmarks.run_all --size full --out /tmp/bench.md
    python -m benchmarks.run_all --size full --update-doc docs/benchmarks.md

``--update-doc`` replaces the part of the file between ``<!-- results:begin -->`` and
``<!-- results:end -->``. A failing benchmark is reported in place and makes the exit
status 1; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    DEFAULT_WORKDIR,
    REPO,
    SIZES,
    bench_env,
)
from benchmarks.report import (
    machine_info,
    render_markdown,
    report_from_json,
)

BENCHMARKS = (
    "map_overhead",
    "task_overhead",
    "split_throughput",
    "aggregation",
    "status_latency",
    "aws_requests",
    "metrics_overhead",
    "scale",
)
OPTIONAL = ("ratelimit",)  # written elsewhere; run when present
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return [*BENCHMARKS, *(name for name in OPTIONAL if (here / f"{name}.py").exists())]


class LoadWatch(threading.Thread):
    """Load average every ``interval`` s; busy CPU of the whole machine from /proc/stat."""

    def __init__(self, interval: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.loads: list[float] = []
        self._done = threading.Event()
        self.busy0 = _busy_seconds()
        self.ours0 = _our_cpu()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self._done.is_set():
            self.loads.append(os.getloadavg()[0])
            self._done.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        elapsed = time.monotonic() - self.start_time
        busy = _busy_seconds() - self.busy0
        ours = _our_cpu() - self.ours0
        loads = self.loads or [os.getloadavg()[0]]
        return {
            "elapsed_s": elapsed,
            "load_min": min(loads),
            "load_median": statistics.median(loads),
            "load_max": max(loads),
            "others_cores": max(0.0, (busy - ours) / elapsed) if elapsed > 0 else 0.0,
            "ours_cores": ours / elapsed if elapsed > 0 else 0.0,
        }


def _our_cpu() -> float:
    """CPU seconds of this process and every child it has waited for."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_one(
    name: str, size: str, repeat: int | None, workdir: Path
) -> tuple[str, dict[str, float]]:
    """Markdown for one benchmark (or its failure), and the load while it ran."""
    argv = [
        sys.executable,
        "-m",
        f"benchmarks.{name}",
        "--size",
        size,
        "--json",
        "--workdir",
        str(workdir),
    ]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    watch = LoadWatch()
    watch.start()
    proc = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, **bench_env()},
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    load = watch.stop()
    if proc.returncode != 0:
        return f"### {name}\n\n**failed** (exit {proc.returncode}); see its stderr.\n", load
    line = proc.stdout.strip().splitlines()[-1]
    report = report_from_json(json.loads(line))
    note = (
        f"\n_ran {load['elapsed_s']:.0f} s; load average {load['load_min']:.1f}–"
        f"{load['load_max']:.1f} (median {load['load_median']:.1f}); the rest of the "
        f"machine used {load['others_cores']:.2f} of {os.cpu_count()} cores meanwhile._\n"
    )
    return render_markdown(report) + note, load


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here")
    parser.add_argument(
        "--update-doc",
        type=Path,
        default=None,
        help=f"replace the part between {BEGIN} and {END} in this file",
    )
    args = parser.parse_args(argv)
    names = available()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmarks {unknown}; known: {names}")
        names = [n for n in names if n in wanted]
    command = "python -m benchmarks.run_all " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    total = LoadWatch()
    total.start()
    parts: list[str] = []
    failed = False
    for name in names:
        print(f"run_all: {name} …", file=sys.stderr, flush=True)
        text, _ = run_one(name, args.size, args.repeat, args.workdir.resolve())
        failed |= "**failed**" in text
        parts.append(text)
    load = total.stop()
    header = [
        f"Produced by `{command.strip()}` on {started}, commit {info['commit']}; "
        f"{info['cpus']} CPUs, Python {info['python']}, pyarrow {info['pyarrow']}, "
        f"{info['platform']}.",
        "",
        f"The suite took {load['elapsed_s'] / 60:.1f} min. Load average (1 min) "
        f"{load['load_min']:.1f}–{load['load_max']:.1f}, median {load['load_median']:.1f}; "
        f"the suite itself used {load['ours_cores']:.2f} cores on average and the rest of "
        f"the machine {load['others_cores']:.2f} cores.",
        "",
    ]
    markdown = "\n".join(header) + "\n" + "\n".join(parts)
    if args.out:
        args.out.write_text(markdown, encoding="utf-8")
    if args.update_doc:
        update_doc(args.update_doc, markdown)
    if not args.out and not args.update_doc:
        print(markdown)
    return 1 if failed else 0


def update_doc(path: Path, markdown: str) -> None:
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{path} has no {BEGIN} … {END} section")
    path.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
