"""Adapter factories and multi-process helpers for the StateStore contract suite.

A new adapter joins the suite by appending one :class:`StoreCase` to :data:`CASES`:
``make`` builds a fresh, empty store from pytest's ``tmp_path`` and ``request`` (so it can
ask for a server fixture through ``request.getfixturevalue``). A case whose store several
processes can share gives ``open_url``: the concurrency tests reopen the store in
spawned children from ``store.url`` with it.

The child functions below are module-level so that ``spawn`` children can import them.
They report plain tuples through a queue, never store data.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardflow.models import Job, Task
from shardflow.statestore.base import StateStore, commit_task, lease_task
from shardflow.statestore.memory import MemoryStateStore
from shardflow.statestore.sqlite import SqliteStateStore, open_sqlite_state

JOB_ID = "job-a"
LEASE_NOW = 1_000.0
BARRIER_TIMEOUT = 60.0


@dataclass(frozen=True)
class StoreCase:
    """``open_url`` given: several processes can share the store, reopened by URL."""

    name: str
    make: Callable[[Path, pytest.FixtureRequest], StateStore]
    open_url: Callable[[str], StateStore] | None = None
    size: int = 4
    """How many quarters of the bulk and concurrency tests' task counts to use (moto
    answers DynamoDB requests one at a time: a quarter keeps CI under its budget and
    still spans many batch writes and contended writes)."""


CASES: list[StoreCase] = [
    StoreCase(
        "sqlite",
        lambda tmp_path, _request: SqliteStateStore(tmp_path / "state" / "state.db"),
        open_url=open_sqlite_state,
    ),
    StoreCase("memory", lambda _tmp_path, _request: MemoryStateStore()),
]


def _dynamodb(tmp_path: Path, request: pytest.FixtureRequest) -> StateStore:
    from shardflow.statestore.dynamodb import DynamoDbStateStore

    return DynamoDbStateStore(
        request.getfixturevalue("dynamodb_table"), settings=request.getfixturevalue("aws_settings")
    )


def _open_dynamodb(url: str) -> StateStore:
    from shardflow.statestore.dynamodb import open_dynamodb_state

    return open_dynamodb_state(url)


CASES.append(StoreCase("dynamodb", _dynamodb, open_url=_open_dynamodb, size=1))

SHARED_CASES = [case for case in CASES if case.open_url is not None]


def open_case(case_name: str, url: str) -> StateStore:
    """In a child process: open the store at ``url`` the way its case does."""
    (case,) = [c for c in SHARED_CASES if c.name == case_name]
    assert case.open_url is not None
    return case.open_url(url)


def make_tasks(job_id: str, count: int, *, start: int = 0) -> list[Task]:
    return [
        Task(job_id=job_id, task_id=f"t{i:06d}", batch_id=f"b{i:06d}")
        for i in range(start, start + count)
    ]


def make_job(job_id: str = JOB_ID, *, created_at: float = 1.0, **changes: Any) -> Job:
    return Job(job_id=job_id, name=f"name of {job_id}", created_at=created_at, **changes)


def race_to_lease(
    case_name: str,
    url: str,
    task_ids: Sequence[str],
    owner: str,
    barrier: Any,
    results: Any,
) -> None:
    """Child: once every racer is ready, try to lease each task in turn.

    All racers walk the same tasks in the same order, so they keep catching up with
    each other and racing for the same task. Reports ``(owner, [(task_id, version)])``
    for each lease won.
    """
    store = open_case(case_name, url)
    won: list[tuple[str, int]] = []
    try:
        barrier.wait(BARRIER_TIMEOUT)
        for task_id in task_ids:
            task = lease_task(store, JOB_ID, task_id, owner=owner, ttl=600, now=LEASE_NOW)
            if task is not None:
                won.append((task_id, task.version))
        results.put((owner, won))
    finally:
        store.close()


def lease_and_commit(
    case_name: str, url: str, task_ids: Sequence[str], owner: str, barrier: Any, results: Any
) -> None:
    """Child: try to lease each task in order and commit those it won."""
    store = open_case(case_name, url)
    committed = 0
    try:
        barrier.wait(BARRIER_TIMEOUT)
        for task_id in task_ids:
            task = lease_task(store, JOB_ID, task_id, owner=owner, ttl=600, now=LEASE_NOW)
            if task is None:
                continue
            commit_task(
                store,
                task,
                now=LEASE_NOW + 1,
                result_attempt=task.attempt,
                items_total=3,
                items_succeeded=2,
                items_failed=1,
                items_rejected=0,
                rows=2,
            )
            committed += 1
        results.put((owner, committed))
    finally:
        store.close()


def run_children(
    target: Callable[..., None], argsets: Sequence[tuple[Any, ...]], *, timeout: float = 120.0
) -> list[Any]:
    """Run ``target(*args, barrier, results)`` in one spawned process per argset.

    The children start their work together on a shared barrier; returns what each put
    on ``results``. Fails if a child dies or the deadline passes.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(argsets))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in argsets]
    for proc in procs:
        proc.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < len(procs):
            try:
                out.append(results.get(timeout=0.2))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a child failed with exit code {dead[0]}"
                assert time.monotonic() < deadline, "children did not finish in time"
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return out
