"""The StateStore contract: every adapter in ``statestore_cases.CASES`` must pass it.

The first part runs over every adapter; the concurrency part over the adapters that
several processes can share; the last part checks what is SQLite's own (URLs, reopening).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardflow.errors import (
    ConfigError,
    ConflictError,
    InvalidIdError,
    NotFoundError,
    StoreError,
)
from shardflow.models import ErrorClass, Event, JobStatus, Task, TaskGroup, TaskStatus
from shardflow.ratelimit.base import BucketState
from shardflow.statestore.base import (
    StateStore,
    TaskWrite,
    commit_task,
    fail_task,
    lease_task,
    renew_lease,
    retry_later,
    status_counter,
    task_counts,
    transition_task,
)
from shardflow.statestore.sqlite import SqliteStateStore, open_sqlite_state
from tests.contract.statestore_cases import (
    CASES,
    JOB_ID,
    LEASE_NOW,
    SHARED_CASES,
    StoreCase,
    lease_and_commit,
    make_job,
    make_tasks,
    race_to_lease,
    run_children,
)

PENDING = status_counter(TaskStatus.PENDING)
LEASED = status_counter(TaskStatus.LEASED)
SUCCEEDED = status_counter(TaskStatus.SUCCEEDED)


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def state_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    case: StoreCase = request.param
    store = case.make(tmp_path, request)
    yield store
    store.close()


@pytest.fixture(params=SHARED_CASES, ids=[case.name for case in SHARED_CASES])
def shared_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StoreCase, StateStore]]:
    case: StoreCase = request.param
    store = case.make(tmp_path, request)
    yield case, store
    store.close()


def _with_tasks(store: StateStore, count: int, job_id: str = JOB_ID) -> list[Task]:
    store.create_job(make_job(job_id))
    tasks = make_tasks(job_id, count)
    assert store.register_tasks(tasks) == count
    return tasks


def test_store_satisfies_the_protocol(state_store: StateStore) -> None:
    assert isinstance(state_store, StateStore)
    assert "://" in state_store.url


# -- jobs ---------------------------------------------------------------------------------


def test_create_job_is_create_only(state_store: StateStore) -> None:
    job = make_job(config={"input": {"path": "a.jsonl"}, "retry": [1, 2.5, None]})
    assert state_store.create_job(job) is True
    assert state_store.create_job(dataclasses.replace(job, name="other")) is False
    assert state_store.get_job(JOB_ID) == job
    assert state_store.get_job("missing") is None


def test_create_job_refuses_an_invalid_id(state_store: StateStore) -> None:
    with pytest.raises(InvalidIdError):
        state_store.create_job(make_job("../etc"))


def test_put_job_is_fenced_on_the_version(state_store: StateStore) -> None:
    job = make_job()
    state_store.create_job(job)
    running = state_store.put_job(dataclasses.replace(job, status=JobStatus.SPLITTING), 0)
    assert running.version == 1
    assert state_store.get_job(JOB_ID) == running
    stale = dataclasses.replace(job, status=JobStatus.CANCELLED)
    with pytest.raises(ConflictError, match="current version is 1"):
        state_store.put_job(stale, 0)
    assert state_store.get_job(JOB_ID) == running
    with pytest.raises(NotFoundError):
        state_store.put_job(make_job("missing"), 0)


def test_list_jobs_newest_first_with_limit(state_store: StateStore) -> None:
    for job_id, created in [("j-b", 3.0), ("j-a", 1.0), ("j-d", 3.0), ("j-c", 2.0)]:
        state_store.create_job(make_job(job_id, created_at=created))
    # equal creation times fall back to the job id, descending
    assert [j.job_id for j in state_store.list_jobs()] == ["j-d", "j-b", "j-c", "j-a"]
    assert [j.job_id for j in state_store.list_jobs(limit=2)] == ["j-d", "j-b"]


def test_job_config_must_be_json(state_store: StateStore) -> None:
    with pytest.raises(TypeError):
        state_store.create_job(make_job(config={"handler": object()}))
    assert state_store.get_job(JOB_ID) is None


# -- tasks and counters ---------------------------------------------------------------


def test_register_tasks_is_idempotent_and_counts_new_tasks(state_store: StateStore) -> None:
    first = make_tasks(JOB_ID, 10)
    assert state_store.register_tasks(first) == 10
    # 5 already there, 5 new, and a duplicate within the call counted once
    again = make_tasks(JOB_ID, 10, start=5) + make_tasks(JOB_ID, 1, start=14)
    assert state_store.register_tasks(again) == 5
    cancelled = dataclasses.replace(make_tasks(JOB_ID, 1, start=99)[0], status=TaskStatus.CANCELLED)
    assert state_store.register_tasks([cancelled]) == 1
    counts = task_counts(state_store.read_counters(JOB_ID))
    assert counts[TaskStatus.PENDING] == 15
    assert counts[TaskStatus.CANCELLED] == 1
    assert state_store.get_task(JOB_ID, "t000003") == first[3]


def test_register_tasks_in_bulk(state_store: StateStore, request: pytest.FixtureRequest) -> None:
    n = 2_500 * request.node.callspec.params["state_store"].size  # 10,000 but on moto
    assert state_store.register_tasks(make_tasks(JOB_ID, n * 8 // 10)) == n * 8 // 10
    # a re-run of the split registers the overlap once
    assert state_store.register_tasks(make_tasks(JOB_ID, n * 4 // 10, start=n * 6 // 10)) == (
        n * 2 // 10
    )
    assert state_store.read_counters(JOB_ID) == {PENDING: n}
    last = state_store.list_tasks(JOB_ID, TaskStatus.PENDING, after=f"t{n - 3:06d}")
    assert [t.task_id for t in last] == [f"t{n - 2:06d}", f"t{n - 1:06d}"]


def test_register_tasks_refuses_invalid_ids_without_writing(state_store: StateStore) -> None:
    bad = [*make_tasks(JOB_ID, 3), Task(job_id=JOB_ID, task_id="Bad/Id", batch_id="b1")]
    with pytest.raises(InvalidIdError):
        state_store.register_tasks(bad)
    assert state_store.list_tasks(JOB_ID) == []
    assert state_store.read_counters(JOB_ID) == {}


def test_cas_task_writes_and_counts_in_one_step(state_store: StateStore) -> None:
    (task,) = _with_tasks(state_store, 1)
    leased = dataclasses.replace(
        task, status=TaskStatus.LEASED, lease_owner="w1", lease_expires_at=70.5, attempt=1
    )
    stored = state_store.cas_task(leased, 0, {PENDING: -1, LEASED: 1, "attempts": 1})
    assert stored == dataclasses.replace(leased, version=1)
    assert state_store.get_task(JOB_ID, task.task_id) == stored
    assert state_store.read_counters(JOB_ID) == {LEASED: 1, "attempts": 1}


def test_cas_task_conflict_changes_nothing(state_store: StateStore) -> None:
    (task,) = _with_tasks(state_store, 1)
    first = state_store.cas_task(dataclasses.replace(task, attempt=1), 0, {"attempts": 1})
    with pytest.raises(ConflictError, match="current version is 1"):
        state_store.cas_task(dataclasses.replace(task, attempt=9), 0, {"attempts": 5, "x": 1})
    assert state_store.get_task(JOB_ID, task.task_id) == first
    assert state_store.read_counters(JOB_ID) == {PENDING: 1, "attempts": 1}
    with pytest.raises(NotFoundError):
        state_store.cas_task(dataclasses.replace(task, task_id="t999999"), 0, {"attempts": 1})
    assert state_store.read_counters(JOB_ID) == {PENDING: 1, "attempts": 1}


def test_cas_tasks_writes_each_fenced_and_refuses_only_the_stale_ones(
    state_store: StateStore,
) -> None:
    a, b, c = _with_tasks(state_store, 3)
    moved = state_store.cas_task(dataclasses.replace(b, attempt=1), 0, {"attempts": 1})
    writes = [
        TaskWrite(dataclasses.replace(a, rows=5), 0, {"rows": 5}),
        TaskWrite(dataclasses.replace(b, rows=7), 0, {"rows": 7}),  # b is at version 1
        TaskWrite(dataclasses.replace(c, rows=9), 0, {"rows": 9, "attempts": 1}),
        TaskWrite(dataclasses.replace(c, task_id="t999999"), 0, {"rows": 100}),
    ]
    done = state_store.cas_tasks(writes)
    assert done == [
        dataclasses.replace(a, rows=5, version=1),
        None,
        dataclasses.replace(c, rows=9, version=1),
        None,
    ]
    assert state_store.get_task(JOB_ID, b.task_id) == moved
    assert state_store.get_task(JOB_ID, c.task_id) == done[2]
    # the refused writes' counters were not applied
    assert state_store.read_counters(JOB_ID) == {PENDING: 3, "rows": 14, "attempts": 2}
    assert state_store.cas_tasks([]) == []


def test_counters_add_up_and_zeros_are_omitted(state_store: StateStore) -> None:
    state_store.add_counters(JOB_ID, {"rows": 5, "items.rejected": 2})
    state_store.add_counters(JOB_ID, {"rows": 3, "items.rejected": -2, "noop": 0})
    assert state_store.read_counters(JOB_ID) == {"rows": 8}
    assert state_store.read_counters("other") == {}


def test_list_tasks_pages_by_task_id_and_filters_by_status(state_store: StateStore) -> None:
    tasks = _with_tasks(state_store, 25)
    for task in tasks[::3]:
        state_store.cas_task(
            dataclasses.replace(task, status=TaskStatus.LEASED), 0, {PENDING: -1, LEASED: 1}
        )
    pages: list[list[str]] = []
    after: str | None = None
    while page := state_store.list_tasks(JOB_ID, limit=10, after=after):
        pages.append([t.task_id for t in page])
        after = page[-1].task_id
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [task_id for page in pages for task_id in page] == [t.task_id for t in tasks]
    leased = state_store.list_tasks(JOB_ID, TaskStatus.LEASED, limit=4)
    assert [t.task_id for t in leased] == [t.task_id for t in tasks[:12:3]]
    rest = state_store.list_tasks(JOB_ID, TaskStatus.LEASED, after=leased[-1].task_id)
    assert [t.task_id for t in rest] == [t.task_id for t in tasks[12::3]]
    assert all(t.status is TaskStatus.LEASED and t.version == 1 for t in leased + rest)
    pending = state_store.list_tasks(JOB_ID, TaskStatus.PENDING)
    assert len(pending) == 16 == state_store.read_counters(JOB_ID)[PENDING]
    assert state_store.list_tasks("other") == []


# -- the lifecycle functions of statestore/base.py over the adapter ----------------------


def test_lease_renew_commit(state_store: StateStore) -> None:
    _with_tasks(state_store, 1)
    task = lease_task(state_store, JOB_ID, "t000000", owner="w1", ttl=30, now=100.0)
    assert task is not None
    assert (task.status, task.attempt, task.lease_owner) == (TaskStatus.LEASED, 1, "w1")
    assert lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=30, now=110.0) is None
    renewed = renew_lease(state_store, task, ttl=30, now=120.0)
    assert renewed.lease_expires_at == 150.0
    with pytest.raises(ConflictError):
        renew_lease(state_store, task, ttl=30, now=121.0)  # the stale copy lost its fence
    done = commit_task(
        state_store,
        renewed,
        now=130.0,
        result_attempt=1,
        items_total=10,
        items_succeeded=9,
        items_failed=1,
        items_rejected=2,
        rows=9,
    )
    assert state_store.get_task(JOB_ID, "t000000") == done
    assert (done.status, done.result_attempt, done.lease_owner) == (TaskStatus.SUCCEEDED, 1, None)
    assert state_store.read_counters(JOB_ID) == {
        SUCCEEDED: 1,
        "attempts": 1,
        "items.succeeded": 9,
        "items.failed": 1,
        "items.rejected": 2,
        "rows": 9,
    }


def test_expired_lease_is_taken_over_and_fences_the_old_holder(state_store: StateStore) -> None:
    _with_tasks(state_store, 1)
    old = lease_task(state_store, JOB_ID, "t000000", owner="w1", ttl=10, now=0.0)
    assert old is not None
    assert lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=10, now=9.9) is None
    new = lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=10, now=10.0)
    assert new is not None
    assert (new.lease_owner, new.attempt) == ("w2", 2)
    with pytest.raises(ConflictError):
        renew_lease(state_store, old, ttl=10, now=10.5)
    with pytest.raises(ConflictError):
        fail_task(state_store, old, now=11.0, error_class=ErrorClass.UNKNOWN, message="late")
    assert state_store.read_counters(JOB_ID) == {LEASED: 1, "attempts": 2}


def test_retry_later_waits_for_not_before(state_store: StateStore) -> None:
    _with_tasks(state_store, 1)
    task = lease_task(state_store, JOB_ID, "t000000", owner="w1", ttl=60, now=0.0)
    assert task is not None
    waiting = retry_later(
        state_store, task, now=5.0, delay=30.0, error_class=ErrorClass.TRANSIENT, message="429"
    )
    assert (waiting.status, waiting.not_before) == (TaskStatus.RETRY_WAIT, 35.0)
    assert state_store.list_tasks(JOB_ID, TaskStatus.RETRY_WAIT) == [waiting]
    assert lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=60, now=34.9) is None
    again = lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=60, now=35.0)
    assert again is not None
    assert (again.attempt, again.not_before, again.error_class) == (2, None, ErrorClass.TRANSIENT)
    assert task_counts(state_store.read_counters(JOB_ID))[TaskStatus.RETRY_WAIT] == 0


def test_failed_task_can_be_redriven(state_store: StateStore) -> None:
    _with_tasks(state_store, 1)
    task = lease_task(state_store, JOB_ID, "t000000", owner="w1", ttl=60, now=0.0)
    assert task is not None
    failed = fail_task(
        state_store, task, now=2.0, error_class=ErrorClass.PERMANENT, message="bad" * 1000
    )
    assert failed.status is TaskStatus.FAILED
    assert failed.error_message == ("bad" * 1000)[:2000]
    assert lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=60, now=3.0) is None
    pending = transition_task(state_store, failed, TaskStatus.PENDING, now=4.0)
    assert lease_task(state_store, JOB_ID, "t000000", owner="w2", ttl=60, now=5.0) is not None
    assert pending.version == failed.version + 1
    assert task_counts(state_store.read_counters(JOB_ID))[TaskStatus.LEASED] == 1
    assert task_counts(state_store.read_counters(JOB_ID))[TaskStatus.FAILED] == 0


def test_lease_of_a_missing_task_raises(state_store: StateStore) -> None:
    with pytest.raises(NotFoundError):
        lease_task(state_store, JOB_ID, "t000000", owner="w1", ttl=60, now=0.0)


# -- events, task groups, buckets --------------------------------------------------------


def test_events_are_appended_in_order(state_store: StateStore) -> None:
    for i in range(5):
        detail = {"i": i, "status": TaskStatus.FAILED, "ids": ("a", "b")}
        state_store.append_event(Event(job_id=JOB_ID, kind=f"k{i}", at=float(i), detail=detail))
    state_store.append_event(Event(job_id="job-b", kind="other", at=9.0, actor="cli"))
    latest = state_store.list_events(JOB_ID, limit=3)
    assert [e.kind for e in latest] == ["k2", "k3", "k4"]
    assert latest[0].seq < latest[1].seq < latest[2].seq
    assert latest[0].detail == {"i": 2, "status": "FAILED", "ids": ["a", "b"]}
    assert len(state_store.list_events(JOB_ID)) == 5
    (other,) = state_store.list_events("job-b")
    assert (other.kind, other.actor, other.at, other.detail) == ("other", "cli", 9.0, {})


def test_task_groups_are_listed_by_round_and_replaced(state_store: StateStore) -> None:
    retry = TaskGroup(job_id=JOB_ID, group_id="g1", round=1, slots=2, executor="local")
    first = TaskGroup(job_id=JOB_ID, group_id="g0", round=0, slots=8, executor="slurm")
    state_store.put_task_group(retry)
    state_store.put_task_group(first)
    started = dataclasses.replace(first, handles=("123_0", "123_1"))
    state_store.put_task_group(started)
    assert state_store.list_task_groups(JOB_ID) == [started, retry]
    assert state_store.list_task_groups("job-b") == []


def test_buckets_compare_and_set(state_store: StateStore) -> None:
    key = f"{JOB_ID}/geo_api"
    assert state_store.get_bucket(key) is None
    state = BucketState(key=key, rate=50.0, burst=100.0, tokens=100.0, last_refill=0.0)
    with pytest.raises(ConflictError):
        state_store.cas_bucket(state, 1)  # not there yet
    created = state_store.cas_bucket(state, 0)
    assert created.version == 1
    with pytest.raises(ConflictError):
        state_store.cas_bucket(state, 0)  # create-only
    spent = state_store.cas_bucket(dataclasses.replace(created, tokens=40.0, leased=60.0), 1)
    assert spent.version == 2
    with pytest.raises(ConflictError):
        state_store.cas_bucket(dataclasses.replace(created, tokens=0.0), 1)
    assert state_store.get_bucket(key) == spent
    state_store.cas_bucket(dataclasses.replace(state, key=f"{JOB_ID}/other"), 0)
    state_store.cas_bucket(dataclasses.replace(state, key="job-ab/geo_api"), 0)
    assert state_store.delete_buckets(f"{JOB_ID}/") == 2
    assert state_store.get_bucket(key) is None
    assert state_store.get_bucket("job-ab/geo_api") is not None


def test_delete_job_removes_everything_of_that_job_only(state_store: StateStore) -> None:
    bucket = BucketState(key="", rate=1.0, burst=1.0, tokens=1.0, last_refill=0.0)
    for job_id in (JOB_ID, "job-ab"):
        tasks = _with_tasks(state_store, 3, job_id)
        state_store.cas_task(tasks[0], 0, {"attempts": 1})
        state_store.append_event(Event(job_id=job_id, kind="submitted", at=1.0))
        state_store.put_task_group(
            TaskGroup(job_id=job_id, group_id="g0", round=0, slots=1, executor="local")
        )
        state_store.cas_bucket(dataclasses.replace(bucket, key=f"{job_id}/api"), 0)
    state_store.delete_job(JOB_ID)
    assert state_store.get_job(JOB_ID) is None
    assert state_store.list_jobs() == [make_job("job-ab")]
    assert state_store.list_tasks(JOB_ID) == []
    assert state_store.read_counters(JOB_ID) == {}
    assert state_store.list_events(JOB_ID) == []
    assert state_store.list_task_groups(JOB_ID) == []
    assert state_store.get_bucket(f"{JOB_ID}/api") is None
    assert len(state_store.list_tasks("job-ab")) == 3
    assert state_store.read_counters("job-ab") == {PENDING: 3, "attempts": 1}
    assert len(state_store.list_events("job-ab")) == 1
    assert len(state_store.list_task_groups("job-ab")) == 1
    assert state_store.get_bucket("job-ab/api") is not None
    # the id can be used again, from nothing
    assert state_store.create_job(make_job(JOB_ID)) is True
    assert state_store.register_tasks(make_tasks(JOB_ID, 2)) == 2


def test_heartbeat_thread_and_main_thread_share_one_store(state_store: StateStore) -> None:
    _with_tasks(state_store, 50)
    leased = lease_task(state_store, JOB_ID, "t000000", owner="w1", ttl=10, now=0.0)
    assert leased is not None
    holder = [leased]
    errors: list[BaseException] = []

    def heartbeat() -> None:
        try:
            for i in range(100):
                holder[0] = renew_lease(state_store, holder[0], ttl=10, now=float(i))
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    for i in range(1, 50):
        assert lease_task(state_store, JOB_ID, f"t{i:06d}", owner="w1", ttl=10, now=0.0)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert errors == []
    assert holder[0].version == 101
    assert state_store.read_counters(JOB_ID) == {LEASED: 50, "attempts": 50}


# -- real concurrency: several processes on one store ---------------------------------


def test_processes_racing_for_a_task_lease_it_once(
    shared_store: tuple[StoreCase, StateStore],
) -> None:
    case, store = shared_store
    count = 25 * case.size  # 100, but on moto
    task_ids = [t.task_id for t in _with_tasks(store, count)]
    # 8 racers start together on the first task and keep racing down the list (on 2
    # cores a single race rarely overlaps in time; about 1 in 15 of these do)
    argsets = [(case.name, store.url, task_ids, f"w{i}") for i in range(8)]
    results = run_children(race_to_lease, argsets)
    assert len(results) == 8
    winners: dict[str, list[str]] = {task_id: [] for task_id in task_ids}
    for owner, won in results:
        for task_id, version in won:
            assert version == 1
            winners[task_id].append(owner)
    assert all(len(owners) == 1 for owners in winners.values()), winners
    for task_id, (owner,) in winners.items():
        task = store.get_task(JOB_ID, task_id)
        assert task is not None
        assert (task.lease_owner, task.attempt, task.version) == (owner, 1, 1)
        assert task.lease_expires_at == LEASE_NOW + 600
    assert store.read_counters(JOB_ID) == {LEASED: count, "attempts": count}


def test_processes_committing_concurrently_keep_counters_exact(
    shared_store: tuple[StoreCase, StateStore],
) -> None:
    case, store = shared_store
    n = 50 * case.size  # 200, but on moto
    tasks = _with_tasks(store, n)
    halves = [[t.task_id for t in tasks[: n // 2]], [t.task_id for t in tasks[n // 2 :]]]
    # two processes race over each half, so leases contend as well as counters
    argsets = [(case.name, store.url, halves[i % 2], f"w{i}") for i in range(4)]
    results = run_children(lease_and_commit, argsets)
    assert sum(committed for _owner, committed in results) == n
    counters = store.read_counters(JOB_ID)
    assert counters == {
        SUCCEEDED: n,
        "attempts": n,
        "items.succeeded": 2 * n,
        "items.failed": n,
        "rows": 2 * n,
    }
    assert len(store.list_tasks(JOB_ID, TaskStatus.SUCCEEDED)) == n


# -- SQLite's own: URLs, files, reopening --------------------------------------------------


def test_sqlite_url_round_trips_and_parses_options(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "a" / "b" / "state.db")
    assert store.url == f"sqlite://{tmp_path}/a/b/state.db"
    assert (tmp_path / "a" / "b" / "state.db").exists()
    store.create_job(make_job())
    store.close()
    reopened = open_sqlite_state(store.url)
    assert reopened.get_job(JOB_ID) == make_job()
    reopened.close()
    full = open_sqlite_state(f"sqlite://{tmp_path}/f.db?synchronous=full&busy_timeout=5")
    assert full.url == f"sqlite://{tmp_path}/f.db?synchronous=full"
    full.close()
    assert open_sqlite_state(str(tmp_path / "plain.db")).path == tmp_path / "plain.db"


def test_sqlite_relative_path_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_sqlite_state(".shardflow/state.db")
    assert store.url == f"sqlite://{tmp_path}/.shardflow/state.db"
    store.close()


@pytest.mark.parametrize(
    "bad",
    ["dynamodb://x", "sqlite://relative.db", "sqlite:///x.db?journal=off", "sqlite:///?a=b"],
)
def test_sqlite_bad_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        open_sqlite_state(bad)


def test_sqlite_bad_synchronous_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        SqliteStateStore(tmp_path / "s.db", synchronous="NORMAL; DROP TABLE jobs")


def test_sqlite_closed_store_raises(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "s.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_job(JOB_ID)
