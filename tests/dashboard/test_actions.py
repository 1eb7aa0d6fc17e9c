"""The dashboard's actions over the ports: what each changes and what it records."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from shardflow.coordinator.services import Services
from shardflow.dashboard.actions import JobAction, perform
from shardflow.errors import InvalidIdError, StoreError, UsageError
from shardflow.executors.base import SlotSpec, SlotState
from shardflow.layout import Layout
from shardflow.models import ErrorClass, Job, JobStatus, Phase, Task, TaskGroup, TaskStatus
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.queue.memory import MemoryQueue
from shardflow.statestore.base import StateStore
from shardflow.statestore.memory import MemoryStateStore
from tests.dashboard.conftest import QUICKSTART_JOB, Workspace

JOB = "act"
ACTOR = "dashboard:alice"


class RecordingExecutor:
    def __init__(self) -> None:
        self.cancelled: list[str] = []

    @property
    def name(self) -> str:
        return "fake"

    def start_slots(self, spec: SlotSpec) -> list[str]:
        raise AssertionError("actions never start slots")

    def poll(self, handles: Sequence[str]) -> dict[str, SlotState]:
        return dict.fromkeys(handles, SlotState.RUNNING)

    def cancel(self, handles: Sequence[str]) -> None:
        self.cancelled += handles


class Ports:
    def __init__(self, tmp_path: Path) -> None:
        self.store = MemoryObjectStore()
        self.queue = MemoryQueue(JOB)
        self.executor = RecordingExecutor()
        self.tmp_path = tmp_path

    def __call__(self, state: StateStore, job: Job) -> Services:
        return Services(
            cfg=cast(Any, None),  # cancel and retry use only the ports below
            state=state,
            store=self.store,
            executor=self.executor,
            workspace=self.tmp_path,
            queues={job.job_id: self.queue},
        )


@pytest.fixture
def state() -> MemoryStateStore:
    store = MemoryStateStore()
    now = time.time()
    store.create_job(
        Job(JOB, "act", status=JobStatus.RUNNING, phase=Phase.MAP, created_at=now, total_tasks=4)
    )
    statuses = [TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.PENDING, TaskStatus.FAILED]
    store.register_tasks(
        [
            Task(
                JOB,
                f"t{i:06d}",
                f"b{i:06d}",
                status=s,
                attempt=3 if s is TaskStatus.FAILED else 1,
                items_total=10,
                error_class=ErrorClass.TRANSIENT if s is TaskStatus.FAILED else None,
                error_message="HTTP 503" if s is TaskStatus.FAILED else None,
            )
            for i, s in enumerate(statuses)
        ]
    )
    store.add_counters(JOB, {"items.failed": 20, "items.succeeded": 10})
    store.put_task_group(TaskGroup(JOB, "g001", 1, 2, "local", ("local:1", "local:2")))
    return store


def test_retry_requeues_failed_tasks_and_records_who(
    state: MemoryStateStore, tmp_path: Path
) -> None:
    ports = Ports(tmp_path)
    layout = Layout(JOB)
    ports.store.put_bytes(layout.output_success(), b"")
    outcome = perform(state, JOB, JobAction.RETRY, actor=ACTOR, services=ports)
    assert outcome.changed
    assert "re-queued 2 failed task(s)" in outcome.message
    assert len(state.list_tasks(JOB, TaskStatus.FAILED)) == 0
    pending = state.list_tasks(JOB, TaskStatus.PENDING)
    assert [t.task_id for t in pending] == ["t000001", "t000002", "t000003"]
    assert state.read_counters(JOB).get("items.failed", 0) == 0
    assert ports.store.head(layout.output_success()) is None  # the old output is not current
    received = ports.queue.receive(max_messages=10, visibility_timeout=60)
    assert len(received) == 2
    events = state.list_events(JOB)
    assert [(e.kind, e.actor) for e in events] == [("retried", ACTOR)]
    again = perform(state, JOB, JobAction.RETRY, actor=ACTOR, services=ports)
    assert not again.changed
    assert "no failed tasks" in again.message


def test_cancel_cancels_unfinished_tasks_and_stops_slots(
    state: MemoryStateStore, tmp_path: Path
) -> None:
    ports = Ports(tmp_path)
    outcome = perform(state, JOB, JobAction.CANCEL, actor=ACTOR, services=ports)
    assert outcome.changed
    assert "1 unfinished task(s) cancelled, 2 slot(s) stopped" in outcome.message
    job = state.get_job(JOB)
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    assert job.cancel_requested
    assert [t.task_id for t in state.list_tasks(JOB, TaskStatus.CANCELLED)] == ["t000002"]
    assert len(state.list_tasks(JOB, TaskStatus.SUCCEEDED)) == 1  # finished work is kept
    assert ports.executor.cancelled == ["local:1", "local:2"]
    assert [(e.kind, e.actor) for e in state.list_events(JOB)] == [("cancelled", ACTOR)]
    assert not perform(state, JOB, JobAction.CANCEL, actor=ACTOR, services=ports).changed
    with pytest.raises(UsageError, match="cancelled"):
        perform(state, JOB, JobAction.RETRY, actor=ACTOR, services=ports)


class NoPurgeQueue(MemoryQueue):
    """A queue the caller may not purge (the dashboard's IAM role denies sqs:PurgeQueue)."""

    def purge(self) -> None:
        raise StoreError("purge shardflow-job-1: AccessDenied")


def test_cancel_from_a_role_that_cannot_purge_the_queue_still_cancels(
    state: MemoryStateStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ports = Ports(tmp_path)
    ports.queue = NoPurgeQueue(JOB)
    outcome = perform(state, JOB, JobAction.CANCEL, actor=ACTOR, services=ports)
    assert outcome.changed
    job = state.get_job(JOB)
    assert job is not None
    assert job.status is JobStatus.CANCELLED  # not left half-cancelled
    assert "queue not purged" in caplog.text


def test_pause_needs_no_other_port_and_refuses_unknown_jobs(state: MemoryStateStore) -> None:
    def no_ports(state: StateStore, job: Job) -> Services:
        raise AssertionError("pause must not open the job's ports")

    assert perform(state, JOB, JobAction.PAUSE, actor=ACTOR, services=no_ports).changed
    assert perform(state, JOB, JobAction.RESUME, actor=ACTOR, services=no_ports).changed
    with pytest.raises(UsageError, match="not found"):
        perform(state, "nope", JobAction.PAUSE, actor=ACTOR, services=no_ports)
    with pytest.raises(InvalidIdError):
        perform(state, "../etc", JobAction.PAUSE, actor=ACTOR, services=no_ports)


def test_actions_on_a_real_finished_job_use_its_own_ports(quickstart: Workspace) -> None:
    state = quickstart.open_state()
    try:
        # the default factory builds the ports from the job's config snapshot
        outcome = perform(state, QUICKSTART_JOB, JobAction.RETRY, actor=ACTOR)
        assert not outcome.changed
        assert "no failed tasks" in outcome.message
        with pytest.raises(UsageError, match="already SUCCEEDED"):
            perform(state, QUICKSTART_JOB, JobAction.CANCEL, actor=ACTOR)
        with pytest.raises(UsageError, match="nothing to pause"):
            perform(state, QUICKSTART_JOB, JobAction.PAUSE, actor=ACTOR)
    finally:
        state.close()
