"""Running a shardflow job for a benchmark and reading what its stores recorded.

:func:`write_job` writes a job file (JSON, which is YAML) into a fresh folder;
:func:`run_job` runs ``shardflow run`` there as a measured child; :func:`job_timeline`
reads the phases from the job's events and task rows and the per-attempt metrics from
its counters (``metrics.*``) — the numbers shardflow itself records, not guesses.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Measured, bench_env, last_json_line, run_measured, shardflow_argv

HANDLERS = Path(__file__).resolve().parent / "handlers.py"
JOB_ID = "bench"


def write_job(
    folder: Path,
    *,
    name: str,
    handler: str,
    input_path: Path,
    records_per_task: int,
    slots: int = 2,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A job file in ``folder`` running ``benchmarks/handlers.py:<handler>``."""
    config: dict[str, Any] = {
        "name": name,
        "handler": f"{HANDLERS}:{handler}",
        "input": {"path": str(input_path), "format": "jsonl"},
        "batching": {"records": records_per_task},
        "resources": {"slots": slots},
        "output": {"format": "parquet"},
    }
    for key, value in (extra or {}).items():
        section = config.setdefault(key, {})
        if isinstance(section, dict) and isinstance(value, Mapping):
            section.update(value)
        else:
            config[key] = value
    path = folder / "job.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def run_job(folder: Path, *args: str, timeout: float = 3600.0) -> tuple[Measured, dict[str, Any]]:
    """``shardflow run job.yaml --json`` in ``folder``: the measurement and its summary."""
    measured = run_measured(
        shardflow_argv("run", "job.yaml", "--json", "--job-id", JOB_ID, *args),
        cwd=folder,
        env=bench_env(),
        timeout=timeout,
    ).check("shardflow run")
    summary = last_json_line(measured.stdout)
    if summary.get("status") != "SUCCEEDED":
        raise RuntimeError(f"job ended {summary.get('status')}: {summary}")
    return measured, summary


def state_path(folder: Path) -> Path:
    return folder / ".shardflow" / "state.db"


@dataclass(frozen=True)
class Timeline:
    """Seconds between the job's recorded moments, and what its attempts measured."""

    split_s: float  # submitted → dispatched (split, manifests, task rows, messages)
    slot_start_s: float  # slots_started → the first lease
    map_s: float  # slots_started → the last task commit
    aggregate_s: float  # the last task commit → finished
    tasks: int
    task_wall_ms: float  # mean per-attempt wall (Task.metrics), commit excluded
    task_cpu_ms: float  # mean per-attempt CPU (Task.metrics)
    lease_to_commit_ms: float  # mean started_at → finished_at (lease, run, publish, commit)
    attempts_cpu_s: float  # sum of metrics.cpu_ms over the job
    attempts_wall_s: float  # sum of metrics.wall_ms over the job

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def job_timeline(folder: Path, job_id: str = JOB_ID) -> Timeline:
    from shardflow.statestore.sqlite import SqliteStateStore

    state = SqliteStateStore(state_path(folder))
    try:
        events = state.list_events(job_id, limit=10_000)
        first: dict[str, float] = {}
        for event in events:
            first.setdefault(event.kind, event.at)
        tasks = []
        after: str | None = None
        while True:
            page = state.list_tasks(job_id, None, limit=1000, after=after)
            tasks += page
            if len(page) < 1000:
                break
            after = page[-1].task_id
        counters = state.read_counters(job_id)
    finally:
        state.close()
    started = [t.started_at for t in tasks if t.started_at is not None]
    finished = [t.finished_at for t in tasks if t.finished_at is not None]
    spans = [
        t.finished_at - t.started_at
        for t in tasks
        if t.finished_at is not None and t.started_at is not None
    ]
    last_commit = max(finished)
    slots_at = first.get("slots_started", first["dispatched"])
    return Timeline(
        split_s=first["dispatched"] - first["submitted"],
        slot_start_s=min(started) - slots_at,
        map_s=last_commit - slots_at,
        aggregate_s=first["finished"] - last_commit,
        tasks=len(tasks),
        task_wall_ms=statistics.fmean(t.metrics.get("wall_ms", 0.0) for t in tasks),
        task_cpu_ms=statistics.fmean(t.metrics.get("cpu_ms", 0.0) for t in tasks),
        lease_to_commit_ms=statistics.fmean(spans) * 1000,
        attempts_cpu_s=counters.get("metrics.cpu_ms", 0) / 1000,
        attempts_wall_s=counters.get("metrics.wall_ms", 0) / 1000,
    )


def median_timeline(timelines: list[Timeline]) -> Timeline:
    fields = timelines[0].__dict__.keys()
    values = {f: statistics.median(getattr(t, f) for t in timelines) for f in fields}
    values["tasks"] = int(values["tasks"])
    return Timeline(**values)
