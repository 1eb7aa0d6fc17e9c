"""Workload 5, status latency: ``shardflow status`` on a job of many tasks (SQLite state).

The state is built through the StateStore and the task-lifecycle functions a real run
uses: the job goes PENDING → SPLITTING → RUNNING, all tasks are registered, then 12% are
leased and committed SUCCEEDED (with per-attempt metrics), 1% FAILED, 1% wait for a
retry and 2% stay LEASED, so counters, the error summary and ``--detail`` have real
work. The database is cached in the work folder (it only ever gets read here).

Measured: the command as a real subprocess (interpreter start and imports included) and
the same command in-process (click's entry point with the store opened per call, warm
imports), each repeated; median and p95. Targets: under 2 s for the command and under
300 ms in-process on the SQLite store. Sizes: tiny 2,000 tasks, small 20,000, full 100,000.

Usage: ``python -m benchmarks.status_latency --size tiny|small|full [--json]``
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    bench_env,
    jsonl_dataset,
    percentile,
    run_measured,
    shardflow_argv,
)
from benchmarks.common import parse_args as common_args
from benchmarks.report import (
    Report,
    Table,
    emit,
)
from benchmarks.sfjob import HANDLERS

SIZES = {"tiny": 1_000, "small": 20_000, "full": 100_000}
CALLS = {"tiny": 3, "small": 20, "full": 20}
JOB = "bench-status"
COMMAND_TARGET_S = 2.0
INPROC_TARGET_S = 0.3
VARIANTS = (("status", ()), ("status --json", ("--json",)), ("status --detail", ("--detail",)))


def build_state(path: Path, tasks: int, input_path: Path) -> None:
    """A job of ``tasks`` tasks in various states, written through the real transitions."""
    from shardflow.config import load_job_config
    from shardflow.models import ErrorClass, Event, Job, JobStatus, Phase, Task
    from shardflow.statestore.base import (
        commit_task,
        fail_task,
        lease_task,
        retry_later,
        update_job,
    )
    from shardflow.statestore.sqlite import SqliteStateStore

    job_file = path.with_suffix(".yaml")
    job_file.write_text(
        f'{{"name": "bench-status", "handler": "{HANDLERS}:enrich", '
        f'"input": {{"path": "{input_path}"}}, "batching": {{"records": 100}}}}',
        encoding="utf-8",
    )
    try:
        config = load_job_config(job_file, []).config.model_dump(mode="json")
    finally:
        job_file.unlink()
    state = SqliteStateStore(path)
    now = time.time()
    state.create_job(
        Job(
            JOB,
            "bench-status",
            created_at=now,
            updated_at=now,
            config={"config": config, "base_dir": str(path.parent)},
        )
    )
    state.append_event(Event(JOB, "submitted", now))
    update_job(state, JOB, now=now, status=JobStatus.SPLITTING, phase=Phase.SPLIT)
    split = {"records": tasks * 100, "rejected": 3, "duplicates": 1, "batches": tasks}
    state.register_tasks(
        [Task(JOB, f"t{n:06d}", f"b{n:06d}", items_total=100, updated_at=now) for n in range(tasks)]
    )
    update_job(
        state,
        JOB,
        now=now,
        status=JobStatus.RUNNING,
        phase=Phase.MAP,
        total_tasks=tasks,
        total_items=tasks * 100,
        config={"config": config, "base_dir": str(path.parent), "split": split},
    )
    for n in range(tasks):
        share = n % 100
        if share >= 16:
            continue
        task = lease_task(state, JOB, f"t{n:06d}", owner=f"slot-{n % 7}", ttl=600, now=now)
        assert task is not None
        t = now + n * 0.01
        if share < 12:
            metrics = {
                "wall_ms": 900.0 + share,
                "cpu_ms": 850.0,
                "items": 100.0,
                "bytes_read": 15_000.0,
                "bytes_written": 9_000.0,
            }
            commit_task(
                state,
                task,
                now=t,
                result_attempt=1,
                items_total=100,
                items_succeeded=100,
                items_failed=0,
                items_rejected=0,
                rows=100,
                metrics=metrics,
                metric_counters={f"metrics.{k}": round(v) for k, v in metrics.items()},
            )
        elif share == 12:
            fail_task(
                state,
                task,
                now=t,
                error_class=ErrorClass.PERMANENT,
                message="ValueError: not an email address",
            )
        elif share == 13:
            retry_later(
                state,
                task,
                now=t,
                delay=60,
                error_class=ErrorClass.TRANSIENT,
                message="TimeoutError: upstream took too long",
            )
        # 14, 15: stay LEASED (running)
    state.close()


def cached_state(workdir: Path, tasks: int) -> Path:
    path = workdir / "data" / f"status-{tasks}.db"
    if not path.exists():
        tmp = workdir / "data" / f"status-{tasks}.tmp{os.getpid()}.db"
        build_state(tmp, tasks, jsonl_dataset(workdir, 1_000))
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{tmp}{suffix}")
            if src.exists():
                src.replace(Path(f"{path}{suffix}"))
    return path


def in_process(url: str, extra: Sequence[str]) -> float:
    """One ``shardflow status`` through click in this process; seconds."""
    from shardflow.cli.status import status

    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status.main([JOB, "--state-url", url, *extra], standalone_mode=False)
    seconds = time.perf_counter() - start
    if JOB not in out.getvalue():
        raise RuntimeError(f"status printed no summary: {out.getvalue()[:500]}")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = common_args(__doc__ or "", argv)
    tasks = SIZES[args.size]
    calls = CALLS[args.size] * (args.repeat if args.size != "tiny" else 1)
    build_start = time.perf_counter()
    path = cached_state(args.workdir, tasks)
    built_s = time.perf_counter() - build_start
    url = f"sqlite://{path}"
    table = Table(
        f"`shardflow status` on a job of {tasks:,} tasks (SQLite state), {calls} calls each",
        ["how", "command", "median ms", "p95 ms", "max ms", "target", "met"],
    )
    data: dict[str, object] = {"tasks": tasks, "calls": calls}
    for label, extra in VARIANTS:
        times: list[float] = []
        for _ in range(calls):
            m = run_measured(
                shardflow_argv("status", JOB, "--state-url", url, *extra),
                cwd=args.workdir,
                env=bench_env(),
            ).check("shardflow status")
            times.append(m.wall_s)
        add_row(table, data, "subprocess", label, times, COMMAND_TARGET_S)
    for label, extra in VARIANTS:
        in_process(url, extra)  # warm the imports once
        times = [in_process(url, extra) for _ in range(calls)]
        add_row(table, data, "in-process", label, times, INPROC_TARGET_S)
    table.notes.append(
        "subprocess: wall time of a fresh `python -m shardflow.cli.main status …` "
        "(interpreter start and imports included). in-process: the click command called in "
        "a warm interpreter; it opens the state store on every call."
    )
    if built_s > 1:
        table.notes.append(f"building the state took {built_s:.1f}s (cached afterwards)")
    report = Report(
        name="status_latency",
        title="5. Status latency on a large job",
        size=args.size,
        repeat=args.repeat,
        tables=[table],
        data=data,
    )
    emit(report, args.json)
    return 0


def add_row(
    table: Table, data: dict[str, object], how: str, label: str, times: list[float], target: float
) -> None:
    med, p95 = statistics.median(times), percentile(times, 95)
    table.rows.append(
        [
            how,
            label,
            med * 1000,
            p95 * 1000,
            max(times) * 1000,
            f"< {target * 1000:.0f} ms",
            "yes" if p95 < target else "no",
        ]
    )
    data[f"{how} {label}"] = {"median_s": med, "p95_s": p95, "max_s": max(times)}


if __name__ == "__main__":
    sys.exit(main())
