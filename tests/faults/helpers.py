"""Driving real `shardflow run` processes with faults, and checking what they leave.

:class:`FaultJob` owns one scratch folder with a job file over a shared synthetic input;
its runs are real processes (the CLI, and the worker slots it starts), each in its own
session so a test can kill a whole run. :meth:`FaultJob.check` asserts DESIGN.md's
invariants on the final output and the state store; :func:`assert_same_output` is I6.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shardflow.backends import (
    AwsOptions,
    open_object_store,
    open_queue,
    open_state_store,
    queue_url,
)
from shardflow.coordinator.reconcile import reconcile
from shardflow.coordinator.retry import RetryPolicy
from shardflow.layout import Layout
from shardflow.manifests import ResultMarker, decode_manifest
from shardflow.models import Task, TaskStatus
from shardflow.objectstore.base import ObjectStore
from shardflow.queue.local import SqliteQueue
from shardflow.statestore.base import StateStore
from shardflow.testing.invariants import JobOutput, check_invariants, read_job_output
from shardflow.testing.synthetic import Stats, write_jsonl

HANDLERS = Path(__file__).with_name("handlers.py")
FAULT_VARS = ("SHARDFLOW_FAULT", "SHARDFLOW_FAULT_ONCE")


@dataclass(frozen=True)
class Dataset:
    """A synthetic JSONL input and what a correct job must make of it."""

    path: Path
    stats: Stats
    keys: frozenset[str]  # first occurrences of every good record's id
    refused: frozenset[str]  # the keys handlers.enrich refuses

    @property
    def input_records(self) -> int:
        return self.stats.records + self.stats.malformed

    @property
    def rejects(self) -> int:
        return self.stats.malformed + self.stats.duplicates


def make_dataset(path: Path, records: int, *, seed: int) -> Dataset:
    """``records`` good lines with a malformed line every 397 and a duplicate id every 1000."""
    from tests.faults.handlers import refused

    stats = write_jsonl(path, records, seed=seed, malformed_every=397, duplicate_every=1000)
    keys: set[str] = set()
    bad: set[str] = set()
    for line in path.read_bytes().splitlines():
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec["id"] not in keys:
            keys.add(rec["id"])
            if refused(rec):
                bad.add(rec["id"])
    return Dataset(path, stats, frozenset(keys), frozenset(bad))


def base_config(data: Path, handler: str = "enrich") -> dict[str, Any]:
    """The job every scenario starts from: ~20 tasks, short leases and backoffs, a tree."""
    return {
        "name": "fault-suite",
        "handler": f"{HANDLERS}:{handler}",
        "input": {"path": str(data), "id_field": "id"},
        "batching": {"records": 400},
        "retry": {
            "max_attempts": 4,
            "backoff": {"base": "0.2s", "cap": "1s"},
            "tolerated_failure_percent": 10,
        },
        "resources": {"slots": 2},
        "worker": {"lease_ttl": "3s", "checkpoint_every": 100},
        "aggregate": {"fan_in": 4},
    }


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str  # /proc/PID/stat state: R, S, T (stopped), Z (zombie), ...
    argv: tuple[str, ...]

    @property
    def slot(self) -> str:
        return self.argv[self.argv.index("--slot") + 1] if "--slot" in self.argv else ""


def worker_procs(workspace: Path) -> list[Proc]:
    """Worker slot processes whose ``--workspace`` is ``workspace`` (zombies left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = tuple(a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a)
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # it exited while we looked
        if "shardflow.worker" in argv and str(workspace) in argv and state not in ("Z", "X"):
            found.append(Proc(int(entry.name), state, argv))
    return found


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return


class FaultJob:
    """One job in its own folder: ``job.yaml``, ``.shardflow/``, and run output files."""

    def __init__(
        self,
        folder: Path,
        data: Dataset,
        *,
        job_id: str = "fx",
        handler: str = "enrich",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.data = data
        self.job_id = job_id
        self.config = merged(base_config(data.path, handler), config or {})
        self.job_file = folder / "job.yaml"
        # JSON is YAML: the job file is written exactly as the dict says
        self.job_file.write_bytes(orjson.dumps(self.config, option=orjson.OPT_INDENT_2))
        self.workspace = folder / ".shardflow"
        self.state_db = self.workspace / "state.db"
        self.layout = Layout(job_id)
        backends = self.config.get("backends", {})
        self.state_url = str(backends.get("state", self.state_db))
        self.storage_url = str(backends.get("storage", self.workspace / "store"))
        self.queue_url = queue_url(self.state_url, backends.get("queue"))
        # where the test itself reads the stores (AWS: moto directly, not the fault proxy)
        self.read_aws = AwsOptions()
        self._runs = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- running ---------------------------------------------------------------------

    def env(self, fault: str | None = None, once: bool = False, **extra: str) -> dict[str, str]:
        """The environment of a run: the faults asked for and nothing inherited."""
        env = {k: v for k, v in os.environ.items() if k not in FAULT_VARS}
        if fault:
            env["SHARDFLOW_FAULT"] = fault
        if once:
            marker_dir = self.folder / f"once-{self._runs}"
            marker_dir.mkdir(exist_ok=True)
            env["SHARDFLOW_FAULT_ONCE"] = str(marker_dir)
        env.update(extra)
        return env

    def start(
        self, *args: str, env: Mapping[str, str] | None = None, command: str = "run"
    ) -> subprocess.Popen[bytes]:
        """Start ``shardflow run`` (in its own session) without waiting for it."""
        self._runs += 1
        out = (self.folder / f"run-{self._runs}.out").open("wb")
        err = (self.folder / f"run-{self._runs}.err").open("wb")
        with out, err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "shardflow.cli.main",
                    command,
                    str(self.job_file),
                    "--job-id",
                    self.job_id,
                    *args,
                ],
                cwd=self.folder,
                env=dict(env) if env is not None else self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        """Kill whatever a test left running: its runs' sessions and stray slots."""
        for proc in self.procs:
            if proc.poll() is None:
                kill_group(proc)
                proc.wait()
        for worker in self.workers():
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
        """Wait for a started run; kill its whole session if it overruns (and fail)."""
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait()
            raise AssertionError(
                f"shardflow run did not end within {timeout:g}s\n{self.tail()}"
            ) from None

    def run(
        self,
        *,
        env: Mapping[str, str] | None = None,
        expect: int | None = 0,
        timeout: float = 120,
    ) -> dict[str, Any]:
        """Run the job to its end; return `run --json`'s summary (or {} if it died)."""
        proc = self.start("--json", env=env)
        code = self.finish(proc, timeout)
        if expect is not None and code != expect:
            raise AssertionError(f"shardflow run exited {code}, expected {expect}\n{self.tail()}")
        lines = (self.folder / f"run-{self._runs}.out").read_bytes().strip().splitlines()
        return orjson.loads(lines[-1]) if lines and lines[-1].startswith(b"{") else {}

    def tail(self, chars: int = 6000) -> str:
        parts = []
        for n in range(1, self._runs + 1):
            for kind in ("out", "err"):
                path = self.folder / f"run-{n}.{kind}"
                if path.exists():
                    parts.append(f"--- run {n} std{kind}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)[-chars:]

    # -- reading ---------------------------------------------------------------------

    @contextmanager
    def state(self) -> Iterator[StateStore]:
        store = open_state_store(self.state_url, self.read_aws)
        try:
            yield store
        finally:
            store.close()

    def store(self) -> ObjectStore:
        return open_object_store(self.storage_url, self.read_aws)

    def tasks(self) -> list[Task]:
        with self.state() as state:
            return state.list_tasks(self.job_id, None, limit=10_000)

    def task(self, task_id: str) -> Task:
        with self.state() as state:
            task = state.get_task(self.job_id, task_id)
        assert task is not None
        return task

    def summary(self) -> dict[str, Any]:
        from shardflow.cli.common import job_summary

        with self.state() as state:
            job = state.get_job(self.job_id)
            assert job is not None
            return job_summary(state, job)

    def log(self, task_id: str, attempt: int) -> str:
        path = self.workspace / "logs" / self.job_id / f"{task_id}.{attempt:04d}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        folder = self.workspace / "logs" / self.job_id
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))

    def output(self) -> JobOutput:
        return read_job_output(self.store(), self.job_id)

    def marker(self, task_id: str) -> ResultMarker | None:
        key = self.layout.marker(task_id)
        store = self.store()
        if store.head(key) is None:
            return None
        return decode_manifest(store.get_bytes(key), ResultMarker, name=key)

    def workers(self) -> list[Proc]:
        return worker_procs(self.workspace)

    # -- checking --------------------------------------------------------------------

    def check(self, *, refused: frozenset[str] | None = None) -> JobOutput:
        """I1-I5 on the final output and state; returns the output for more checks.

        I1-I3 via :func:`check_invariants` (every good key ends as a row or a failure;
        rejects carry line numbers), I4 via :func:`read_job_output`, I5 as: no task is
        left unfinished and a reconcile pass changes nothing. Also the commit protocol's
        bookkeeping: each SUCCEEDED task's marker names the attempt its row names, and
        the job's counters agree with the published output.
        """
        out = self.output()
        check_invariants(
            out,
            input_records=self.data.input_records,
            expected_rejects=self.data.rejects,
            expected_keys=set(self.data.keys),
        )
        if refused is not None:
            assert refused <= set(out.failure_keys())
        tasks = self.tasks()
        assert all(t.status.is_final for t in tasks), [t for t in tasks if not t.status.is_final]
        for task in tasks:
            if task.status is TaskStatus.SUCCEEDED:
                marker = self.marker(task.task_id)
                assert marker is not None, f"{task.task_id} SUCCEEDED without a marker"
                assert marker.attempt == task.result_attempt, (
                    f"{task.task_id}: the row names attempt {task.result_attempt}, "
                    f"its marker attempt {marker.attempt}"
                )
        summary = self.summary()
        counts = summary["tasks"]
        assert counts["SUCCEEDED"] + counts["FAILED"] == counts["total"] == len(tasks), counts
        assert all(n >= 0 for n in counts.values()), counts
        assert summary["items"]["succeeded"] == out.results.num_rows, summary["items"]
        assert summary["items"]["failed"] == out.failures.num_rows, summary["items"]
        assert summary["items"]["rejected"] == out.rejects.num_rows, summary["items"]
        assert summary["rows"] == out.results.num_rows
        assert self.reconcile_changes() == (), "I5: a reconcile pass after the end changed things"
        return out

    def reconcile_changes(self) -> tuple[str, ...]:
        queue = open_queue(self.queue_url, self.job_id, aws=self.read_aws, create=False)
        try:
            with self.state() as state:
                report = reconcile(state, queue, self.job_id, policy=RetryPolicy(), now=time.time)
        finally:
            if isinstance(queue, SqliteQueue):
                queue.close()
        return report.expired + report.failed + report.resent


def without_attempts(table: Any) -> Any:
    """A failure table without what legitimately differs between runs: which attempt
    recorded a failure, and the worker's own frames in its traceback excerpt."""
    return table.drop_columns([c for c in ("attempt", "traceback") if c in table.column_names])


def assert_same_output(faulty: JobOutput, clean: JobOutput) -> None:
    """I6: the same result rows in the same order, and the same failures and rejects
    (which attempt recorded a failure, and its traceback excerpt, may differ)."""
    assert faulty.results.schema == clean.results.schema
    assert faulty.results.num_rows == clean.results.num_rows
    assert faulty.results.equals(clean.results), "I6: result rows differ from the clean run"
    assert without_attempts(faulty.failures).equals(without_attempts(clean.failures)), (
        "I6: failure records differ from the clean run"
    )
    assert without_attempts(faulty.rejects).equals(without_attempts(clean.rejects)), (
        "I6: rejects differ from the clean run"
    )
