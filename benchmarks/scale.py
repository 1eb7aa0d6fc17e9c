"""Workload 9, the plan's own scale: one input in 1,000, 10,000 and 100,000 tasks.

For each task count the same JSONL input (5M records at ``full``) runs through:

- the hand-written pools of ``benchmarks/baselines.py`` (``pool``: byte ranges, stdlib
  json, tables sent back to the parent, which writes them as they come; ``pool-files``:
  a Parquet file per task and a naive combine), not durable;
- ``shardflow run`` on 2 local slots, durable.

Read for shardflow, from its own records: submit to the first lease, the split (submit to
``dispatched``), the map (first lease to last commit), the tail (last commit to
``finished``); slot CPU utilisation over the map (the slots' CPU, sampled from /proc, over
slots × map wall); the coordinator's CPU and peak RSS; ``shardflow status`` latency while
the job runs (a fresh command every 2 s). Then no-op tasks (one record each) at the same
task counts, for the per-task cost in slot-ms (map wall × slots ÷ tasks), and one
coordinator round over a submitted job of the largest size, for the polling cost.

Sizes: tiny 20,000 records (10 and 100 tasks), small 500,000 (100, 1,000, 10,000),
full 5,000,000 (1,000, 10,000, 100,000).

Usage: ``python -m benchmarks.scale --size tiny|small|full [--json]``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Measured,
    TreeSampler,
    bench_env,
    discard,
    fresh_dir,
    jsonl_dataset,
    last_json_line,
    parse_args,
    python_argv,
    run_measured,
    shardflow_argv,
)
from benchmarks.report import Report, Table, emit
from benchmarks.sfjob import JOB_ID, state_path, write_job

SIZES: dict[str, tuple[int, tuple[int, ...]]] = {
    "tiny": (20_000, (10, 100)),
    "small": (500_000, (100, 1_000, 10_000)),
    "full": (5_000_000, (1_000, 10_000, 100_000)),
}
SLOTS = 2


@dataclass
class SfRun:
    """One measured ``shardflow run`` and what its stores and /proc said."""

    measured: Measured
    first_lease_s: float
    split_s: float
    map_s: float
    tail_s: float
    slot_cpu_s: float
    coordinator_cpu_s: float
    coordinator_rss_mib: float
    status_ms: list[float] = field(default_factory=list)


def _status_poller(folder: Path, stop: threading.Event, out: list[float]) -> None:
    """Time ``shardflow status JOB`` every 2 s while the job runs."""
    env = {**os.environ, **bench_env()}
    while not stop.wait(2.0):
        started = time.perf_counter()
        proc = subprocess.run(
            shardflow_argv("status", JOB_ID), cwd=folder, env=env, capture_output=True, check=False
        )
        if proc.returncode == 0:
            out.append((time.perf_counter() - started) * 1000)


def run_shardflow(folder: Path, *, poll_status: bool) -> SfRun:
    """``shardflow run`` in ``folder``, measured as :func:`run_measured` does (CPU from
    ``wait4``), with a /proc sampler that tells the slots from the coordinator and
    (optionally) a status poller beside it."""
    stop = threading.Event()
    latencies: list[float] = []
    poller = threading.Thread(target=_status_poller, args=(folder, stop, latencies))
    if poll_status:
        poller.start()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            shardflow_argv("run", "job.yaml", "--json", "--job-id", JOB_ID),
            cwd=folder,
            env={**os.environ, **bench_env()},
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop()
        stop.set()
        if poll_status:
            poller.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"shardflow run failed:\n{stderr[-4000:]}")
    summary = last_json_line(stdout)
    if summary.get("status") != "SUCCEEDED":
        raise RuntimeError(f"job ended {summary.get('status')}")
    coordinator_cpu = sampler.cpu.get(proc.pid, 0.0)
    total_cpu = usage.ru_utime + usage.ru_stime
    times = _times(folder)
    measured = Measured.of(wall, usage, sampler, 0)
    return SfRun(
        measured=measured,
        first_lease_s=times["first_lease"] - times["submitted"],
        split_s=times["dispatched"] - times["submitted"],
        map_s=times["last_commit"] - times["first_lease"],
        tail_s=times["finished"] - times["last_commit"],
        slot_cpu_s=total_cpu - coordinator_cpu,
        coordinator_cpu_s=coordinator_cpu,
        coordinator_rss_mib=sampler.rss_kb.get(proc.pid, 0) / 1024,
        status_ms=latencies,
    )


def _times(folder: Path) -> dict[str, float]:
    from shardflow.statestore.sqlite import SqliteStateStore

    state = SqliteStateStore(state_path(folder))
    try:
        first: dict[str, float] = {}
        for event in state.list_events(JOB_ID, limit=10_000):
            first.setdefault(event.kind, event.at)
        started, finished = float("inf"), 0.0
        after: str | None = None
        while True:
            page = state.list_tasks(JOB_ID, None, limit=5000, after=after)
            for t in page:
                started = min(started, t.started_at or started)
                finished = max(finished, t.finished_at or 0.0)
            if len(page) < 5000:
                break
            after = page[-1].task_id
    finally:
        state.close()
    return {**first, "first_lease": started, "last_commit": finished}


def run_pool(kind: str, data: Path, folder: Path, tasks: int) -> Measured:
    out = folder / f"{kind}.parquet"
    argv = python_argv(
        "benchmarks.baselines", kind, "--input", str(data), "--output", str(out),
        "--tasks", str(tasks),
    )  # fmt: skip
    measured = run_measured(argv, cwd=folder, env=bench_env(), timeout=7200).check(kind)
    out.unlink(missing_ok=True)
    return measured


def round_cost(data: Path, workdir: Path, tasks: int) -> tuple[float, float]:
    """Median ms of one coordinator round over a submitted job of ``tasks`` no-op tasks
    (every task PENDING, slots reported running), and ms of one ``status`` read of it."""
    folder = fresh_dir(workdir, "scale-round")
    write_job(folder, name="round", handler="echo", input_path=data, records_per_task=1)
    run_measured(
        shardflow_argv("submit", "job.yaml", "--job-id", JOB_ID), cwd=folder, env=bench_env()
    ).check("submit")
    probe = run_measured(
        python_argv("benchmarks.scale", "--round-probe", str(folder)), cwd=folder, env=bench_env()
    ).check("round probe")
    discard(folder)
    result = last_json_line(probe.stdout)
    return float(result["round_ms"]), float(result["status_ms"])


def round_probe(folder: Path) -> int:
    """In a child: time run_round (a stub executor) and status's counters read."""
    import json

    from shardflow.cli.common import job_summary
    from shardflow.config import load_job_config
    from shardflow.coordinator.round import run_round
    from shardflow.coordinator.services import open_services
    from shardflow.executors.base import SlotState

    loaded = load_job_config(folder / "job.yaml", [])
    svc = open_services(loaded.config, folder / ".shardflow")

    class Running:
        name = "stub"

        def preflight(self) -> None:
            return None

        def start_slots(self, spec: Any) -> list[str]:
            return [f"stub:{n}" for n in range(spec.count)]

        def poll(self, handles: Sequence[str]) -> dict[str, SlotState]:
            return dict.fromkeys(handles, SlotState.RUNNING)

        def cancel(self, handles: Sequence[str]) -> None:
            return None

    svc.executor = Running()  # type: ignore[assignment]
    run_round(svc, JOB_ID)  # the first round starts the (stub) slots
    rounds, reads = [], []
    for _ in range(20):
        started = time.perf_counter()
        run_round(svc, JOB_ID)
        rounds.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        job = svc.state.get_job(JOB_ID)
        assert job is not None
        job_summary(svc.state, job)
        reads.append((time.perf_counter() - started) * 1000)
    print(
        json.dumps({"round_ms": statistics.median(rounds), "status_ms": statistics.median(reads)})
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--round-probe"]:
        return round_probe(Path(raw[1]))
    args = parse_args(__doc__ or "", raw)
    records, task_counts = SIZES[args.size]
    data = jsonl_dataset(args.workdir, records)
    report = Report(
        "scale", "9. Scale: one input in 1,000 to 100,000 tasks", args.size, args.repeat
    )
    wall = Table(
        f"{records:,} JSONL records, 2 slots: wall seconds (median of {args.repeat})",
        ["tasks", "pool", "pool-files", "shardflow", "shardflow ÷ best pool", "durable"],
    )
    phases = Table(
        "shardflow's phases and its own costs (seconds; from its events and task rows)",
        [
            "tasks", "submit → first lease", "split", "map", "last commit → SUCCEEDED",
            "slot CPU utilisation", "coordinator CPU s", "coordinator peak RSS MiB",
            "status p50 ms", "status max ms",
        ],
    )  # fmt: skip
    cpu = Table(
        "CPU seconds (user + system of each process tree)",
        ["tasks", "pool", "pool-files", "shardflow", "of which slots", "of which coordinator"],
    )
    data_out: dict[str, Any] = {}
    for tasks in task_counts:
        per = -(-records // tasks)
        pools: dict[str, list[Measured]] = {"pool": [], "pool-files": []}
        runs: list[SfRun] = []
        for rep in range(args.repeat):
            folder = fresh_dir(args.workdir, f"scale-{tasks}-{rep}")
            for kind in pools:
                pools[kind].append(run_pool(kind, data, folder, tasks))
            write_job(folder, name="scale", handler="enrich", input_path=data,
                      records_per_task=per, slots=SLOTS)  # fmt: skip
            runs.append(run_shardflow(folder, poll_status=True))
            discard(folder)
            print(f"scale: {tasks} tasks, repeat {rep + 1}/{args.repeat}", file=sys.stderr)
        med = {k: statistics.median(m.wall_s for m in v) for k, v in pools.items()}
        sf = statistics.median(r.measured.wall_s for r in runs)
        best = min(med.values())
        wall.rows.append([tasks, med["pool"], med["pool-files"], sf, sf / best, "shardflow only"])
        r = sorted(runs, key=lambda r: r.measured.wall_s)[len(runs) // 2]
        lat = [ms for run in runs for ms in run.status_ms]
        phases.rows.append([
            tasks, r.first_lease_s, r.split_s, r.map_s, r.tail_s,
            r.slot_cpu_s / (SLOTS * r.map_s) if r.map_s else None,
            r.coordinator_cpu_s, r.coordinator_rss_mib,
            statistics.median(lat) if lat else None, max(lat) if lat else None,
        ])  # fmt: skip
        cpu.rows.append([
            tasks,
            statistics.median(m.cpu_s for m in pools["pool"]),
            statistics.median(m.cpu_s for m in pools["pool-files"]),
            r.slot_cpu_s + r.coordinator_cpu_s, r.slot_cpu_s, r.coordinator_cpu_s,
        ])  # fmt: skip
        data_out[str(tasks)] = {"pool": med, "shardflow_s": sf, "status_ms": lat}
    wall.notes.append("the pools are not durable: a crash loses all their work.")
    phases.notes.append(
        "slot CPU utilisation: the slots' CPU over slots × map wall (the coordinator's "
        "split and merge share the 2 cores meanwhile)."
    )
    noop = Table(
        "no-op tasks (one record each), 2 slots, durable: per-task cost",
        ["tasks", "map s", "slot-ms per task", "tasks/s"],
    )
    for tasks in task_counts:
        noop_data = jsonl_dataset(args.workdir, tasks)
        folder = fresh_dir(args.workdir, f"scale-noop-{tasks}")
        write_job(folder, name="noop", handler="echo", input_path=noop_data,
                  records_per_task=1, slots=SLOTS)  # fmt: skip
        run = run_shardflow(folder, poll_status=False)
        discard(folder)
        noop.rows.append([tasks, run.map_s, run.map_s * SLOTS * 1000 / tasks, tasks / run.map_s])
        print(f"scale: {tasks} no-op tasks done", file=sys.stderr)
    noop.notes.append("slot-ms per task = map wall × slots ÷ tasks (issue 14: at most 2).")
    biggest = task_counts[-1]
    round_ms, status_ms = round_cost(jsonl_dataset(args.workdir, biggest), args.workdir, biggest)
    polling = Table(
        f"the coordinator's polling over {biggest:,} pending tasks",
        ["one round ms", "share of a core at 4 rounds/s", "status counters read ms"],
        [[round_ms, f"{round_ms / 250:.1%}", status_ms]],
        ["a round: the job, its slots, reconcile (leases, queue), counters (issue 14: < 3%)."],
    )
    report.tables += [wall, phases, cpu, noop, polling]
    report.data = data_out
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
