"""A slot's commit group on the memory adapters: one flush of the objects, then the task
rows of the group in one call, each fenced on its own version, then their messages; a task
whose lease was taken over meanwhile is not committed, and its message is left alone."""

from __future__ import annotations

from pathlib import Path

from shardflow.coordinator.retry import RetryPolicy
from shardflow.layout import Layout, LocalPaths
from shardflow.manifests import ResultMarker
from shardflow.models import Job, Task, TaskStatus
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.queue.memory import MemoryQueue
from shardflow.split.spec import SplitSpec
from shardflow.statestore.base import lease_task
from shardflow.statestore.memory import MemoryStateStore
from shardflow.worker.commit import CommitGroup
from shardflow.worker.env import WorkerEnv
from shardflow.worker.handler import adapt_handler
from shardflow.worker.lease import LeaseKeeper
from shardflow.worker.task import Finished

JOB = "job-1"


class CountingStore(MemoryObjectStore):
    syncs = 0

    def sync(self) -> None:
        self.syncs += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _env(tmp_path: Path, clock: Clock) -> WorkerEnv:
    state = MemoryStateStore()
    job = Job(job_id=JOB, name="g")
    state.create_job(job)
    state.register_tasks([Task(JOB, f"t{n:06d}", f"b{n:06d}", items_total=1) for n in range(3)])
    return WorkerEnv(
        job=job,
        spec=SplitSpec(paths=("in.jsonl",)),
        state=state,
        store=CountingStore(),
        queue=MemoryQueue(JOB, clock=clock),
        layout=Layout(JOB),
        paths=LocalPaths(tmp_path, tmp_path / "scratch"),
        slot="s1",
        handler=adapt_handler(lambda r, c: r, "h"),
        policy=RetryPolicy(),
        rules=(),
        key_column="_key",
        lease_ttl=60,
        heartbeat=20,
        checkpoint_every=1000,
        checkpoint_interval=5,
        clock=clock,
    )


def _finished(env: WorkerEnv, leases: LeaseKeeper, task_id: str) -> Finished:
    (message,) = env.queue.receive(max_messages=1, visibility_timeout=60)
    task = lease_task(env.state, JOB, task_id, owner="s1", ttl=60, now=env.clock())
    assert task is not None
    leases.hold(task, message.receipt)
    marker = ResultMarker(
        job_id=JOB, task_id=task_id, attempt=1, owner="s1", created_at=env.clock(),
        result_key=env.layout.result(task_id, 1), result_sha256="a" * 64, result_size=10,
        rows=1, failures_key=None, failures_sha256=None, failures_size=0, items_total=1,
        items_succeeded=1, items_failed=0, items_rejected=0, columns=("_key",),
    )  # fmt: skip
    return Finished(task_id, message.receipt, marker, {"wall_ms": 5.0}, None)


def test_a_group_commits_together_and_a_taken_over_task_is_left_out(tmp_path: Path) -> None:
    clock = Clock()
    env = _env(tmp_path, clock)
    for n in range(2):
        env.queue.send(f"t{n:06d}")
    leases = LeaseKeeper(env.state, env.queue, ttl=60, interval=20, clock=clock)
    group = CommitGroup(env, leases, max_tasks=2, max_wait=1.0, clock=clock)
    group.add(_finished(env, leases, "t000000"))
    assert not group.due()
    group.add(_finished(env, leases, "t000001"))
    assert group.due()  # two attempts: max_tasks reached
    # another worker took t000001 over (its lease lapsed): its version moved on
    clock.now += 120
    assert lease_task(env.state, JOB, "t000001", owner="s2", ttl=60, now=clock.now) is not None

    outcomes = group.hand_off()
    assert outcomes == {}  # the flush runs on the committer thread
    outcomes = group.wait()
    group.close()
    leases.stop()

    assert outcomes == {"t000000": "succeeded", "t000001": "lost"}
    assert env.store.syncs == 1  # type: ignore[attr-defined]
    done = env.state.get_task(JOB, "t000000")
    taken = env.state.get_task(JOB, "t000001")
    assert done is not None
    assert done.status is TaskStatus.SUCCEEDED
    assert done.metrics == {"wall_ms": 5.0}
    assert taken is not None
    assert (taken.status, taken.lease_owner) == (TaskStatus.LEASED, "s2")
    counters = env.state.read_counters(JOB)
    assert (counters["tasks.SUCCEEDED"], counters["rows"], counters["metrics.wall_ms"]) == (1, 1, 5)
    # t000000's message is deleted; t000001's stays for its new holder
    assert env.queue.depth().total == 1
    assert leases.lost("t000000")
    assert leases.lost("t000001")


def test_an_empty_group_flushes_nothing(tmp_path: Path) -> None:
    clock = Clock()
    env = _env(tmp_path, clock)
    leases = LeaseKeeper(env.state, env.queue, ttl=60, interval=20, clock=clock)
    group = CommitGroup(env, leases, clock=clock)
    assert group.flush() == {}
    assert not group.due()
    assert env.store.syncs == 0  # type: ignore[attr-defined]
    assert len(group) == 0
