"""Submitting a job: validate, split, write manifests, register tasks, dispatch.

Every step is idempotent and reads the stores rather than memory, so a submit killed
at any line and run again with the same job id finishes the same job: the job row is
created once, the split plan is written last (a re-run splits again until it exists),
task registration inserts only missing tasks, and re-sent messages are harmless
duplicates that the lease turns away.
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardflow.catalog import part_of, part_size, task_id_for
from shardflow.errors import InputError, ShardflowError, UsageError
from shardflow.faults import fault_point
from shardflow.layout import Layout, slugify, validate_id
from shardflow.manifests import (
    JobManifest,
    SplitPlan,
    TaskManifest,
    decode_manifest,
    encode_manifest,
)
from shardflow.models import Batch, Event, Job, JobStatus, Phase, Task, TaskStatus
from shardflow.objectstore.base import ObjectStore
from shardflow.queue.base import Queue
from shardflow.security import audit
from shardflow.security.redact import check_no_embedded_credentials, redact_config
from shardflow.statestore.base import StateStore, update_job
from shardflow.worker.env import task_message

if TYPE_CHECKING:
    from shardflow.config import LoadedConfig

log = logging.getLogger("shardflow.coordinator")


def new_job_id(name: str, now: float) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return validate_id(f"{slugify(name, 30)}-{stamp}-{secrets.token_hex(2)}", "job id")


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


@dataclass(frozen=True)
class Submission:
    job: Job
    created: bool
    plan: SplitPlan


def job_snapshot(loaded: LoadedConfig, workspace: Path) -> dict[str, Any]:
    return {
        "config": loaded.config.model_dump(mode="json"),
        "base_dir": str(loaded.base_dir),
        "workspace": str(workspace),
    }


def submit_job(
    loaded: LoadedConfig,
    *,
    job_id: str | None,
    state: StateStore,
    store: ObjectStore,
    queue_for: Callable[[str], Queue],
    workspace: Path,
    clock: Callable[[], float] = time.time,
    on_dispatch: Callable[[Job, int | None], None] | None = None,
) -> Submission:
    """Create (or resume) the job and bring it to RUNNING with every task dispatched.

    Tasks are registered and dispatched part by part while the split runs;
    ``on_dispatch(job, tasks)`` is called once, when the first part's tasks are on the
    queue (``run`` starts its worker slots then), with the job's task count if it is known
    by then (a split that made one short part), else None. For an input of
    :data:`EARLY_SLOTS_BYTES` or more it is called as the split starts: the slots' start-up
    then overlaps the first batches.
    """
    from shardflow.coordinator.specs import split_spec
    from shardflow.split.sources import expand_inputs

    now = clock()
    job_id = validate_id(job_id, "job id") if job_id else new_job_id(loaded.config.name, now)
    snapshot = job_snapshot(loaded, workspace)
    check_no_embedded_credentials(snapshot["config"])
    # an input that is not there is said before any job exists
    expand_inputs(split_spec(loaded.config).paths)
    job = Job(
        job_id=job_id,
        name=loaded.config.name,
        created_at=now,
        updated_at=now,
        config=snapshot,
        submitted_by=actor(),
    )
    created = state.create_job(job)
    existing = state.get_job(job_id)
    assert existing is not None
    if not created and existing.config.get("config") != snapshot["config"]:
        raise UsageError(
            f"job {job_id} already exists with a different config; "
            "resume it with the same config, or choose another --job-id"
        )
    try:
        return _submit_created(
            loaded, existing, created, state, store, queue_for, clock, on_dispatch
        )
    except ShardflowError as exc:
        # whatever stops a job before its tasks are all out leaves no live job behind
        _fail_unsplit(state, job_id, clock(), exc)
        raise


def _fail_unsplit(state: StateStore, job_id: str, now: float, exc: Exception) -> None:
    try:
        job = state.get_job(job_id)
        if job is not None and job.status in (JobStatus.PENDING, JobStatus.SPLITTING):
            update_job(state, job_id, now=now, status=JobStatus.FAILED, message=str(exc)[:2000])
            state.append_event(Event(job_id, "failed", now, actor(), {"error": str(exc)[:500]}))
    except ShardflowError as store_exc:  # the store itself is what failed
        log.warning("could not mark job %s failed: %s", job_id, store_exc)


def _submit_created(
    loaded: LoadedConfig,
    job: Job,
    created: bool,
    state: StateStore,
    store: ObjectStore,
    queue_for: Callable[[str], Queue],
    clock: Callable[[], float],
    on_dispatch: Callable[[Job, int | None], None] | None,
) -> Submission:
    from shardflow.coordinator.specs import split_spec

    job_id, now = job.job_id, job.created_at
    snapshot = job.config
    if created:
        state.append_event(Event(job_id, "submitted", now, actor(), {"name": job.name}))
        audit.record(
            store,
            actor=actor(),
            action="job.submit",
            job_id=job_id,
            at=now,
            detail=audit.submission_detail(snapshot["config"]),
        )
    layout = Layout(job_id)
    if job.status not in (JobStatus.PENDING, JobStatus.SPLITTING):
        if on_dispatch is not None:
            on_dispatch(job, job.total_tasks)
        return Submission(job, created, load_plan(store, layout))
    if job.status is JobStatus.PENDING:
        job = update_job(state, job_id, now=clock(), status=JobStatus.SPLITTING, phase=Phase.SPLIT)
    from shardflow.ratelimit.control import configured_limits, ensure_buckets

    ensure_buckets(state, job_id, configured_limits(job), clock())
    publisher = PartPublisher(state, store, queue_for(job_id), layout, job, clock, on_dispatch)
    if on_dispatch is not None and _input_bytes(split_spec(loaded.config)) >= EARLY_SLOTS_BYTES:
        publisher.first_dispatch(job, None)
    plan = _split(loaded, job, store, layout, split_spec(loaded.config), clock, publisher)
    if plan.records == 0:
        inputs = ", ".join(i.url for i in plan.inputs)
        raise InputError(
            f"{inputs}: no record to process"
            + (
                f" ({plan.rejected} lines rejected, see `shardflow status {job_id}`)"
                if plan.rejected
                else " (the input is empty)"
            )
        )
    config = dict(job.config)
    config["split"] = {
        "records": plan.records,
        "rejected": plan.rejected,
        "duplicates": plan.duplicates,
        "batches": plan.batches,
    }
    job = update_job(
        state,
        job_id,
        now=clock(),
        status=JobStatus.RUNNING,
        phase=Phase.MAP,
        total_tasks=plan.batches,
        total_items=plan.records,
        config=config,
    )
    detail = {"tasks": plan.batches, "new": publisher.registered}
    state.append_event(Event(job_id, "dispatched", clock(), actor(), detail))
    audit.record(
        store, actor=actor(), action="job.dispatch", job_id=job_id, at=clock(), detail=detail
    )
    publisher.first_dispatch(job, plan.batches)
    return Submission(job, created, plan)


class PartPublisher:
    """Publishes the split's parts as they come: the task manifest, the tasks (one write),
    their messages (one write); the first one also tells ``on_dispatch``."""

    def __init__(
        self,
        state: StateStore,
        store: ObjectStore,
        queue: Queue,
        layout: Layout,
        job: Job,
        clock: Callable[[], float],
        on_dispatch: Callable[[Job, int | None], None] | None,
    ) -> None:
        self.state, self.store, self.queue, self.layout = state, store, queue, layout
        self.job, self.clock, self.on_dispatch = job, clock, on_dispatch
        self.registered = 0
        self._told = False

    def __call__(self, part: int, batches: Sequence[Batch]) -> None:
        job_id = self.job.job_id
        manifest = TaskManifest(job_id=job_id, part=part, batches=tuple(batches))
        # a re-run of a killed split makes the same part: an existing one is kept
        self.store.put_bytes(
            self.layout.task_part(part), encode_manifest(manifest), create_only=True
        )
        now = self.clock()
        tasks = [
            Task(
                job_id=job_id,
                task_id=task_id_for(b.batch_id),
                batch_id=b.batch_id,
                items_total=b.records - len(b.skip),
                updated_at=now,
            )
            for b in batches
        ]
        self.registered += self.state.register_tasks(tasks)
        self.queue.send_many([task_message(job_id, t.task_id) for t in tasks])
        fault_point("mid_dispatch")
        # a short part is the last one: then the job's size is known
        self.first_dispatch(self.job, len(tasks) if len(tasks) < part_size(part) else None)

    def first_dispatch(self, job: Job, tasks: int | None) -> None:
        if not self._told:
            self._told = True
            if self.on_dispatch is not None:
                self.on_dispatch(job, tasks)


EARLY_SLOTS_BYTES = 64 << 20
"""Inputs at least this big get their worker slots started as their split starts."""


def _input_bytes(spec: Any) -> int:
    """The inputs' total size (0 if they cannot be listed: the split will say why)."""
    from shardflow.split.sources import expand_inputs

    try:
        return sum(source.size for source in expand_inputs(spec.paths))
    except ShardflowError:
        return 0


def load_plan(store: ObjectStore, layout: Layout) -> SplitPlan:
    key = layout.split_done()
    return decode_manifest(store.get_bytes(key), SplitPlan, name=key)


def _split(
    loaded: LoadedConfig,
    job: Job,
    store: ObjectStore,
    layout: Layout,
    spec: Any,
    clock: Callable[[], float],
    publish: PartPublisher,
) -> SplitPlan:
    from shardflow.split.plan import split_input

    if store.head(layout.split_done()) is not None:
        # split before, and killed before the job was RUNNING: every part is registered;
        # messages for its pending tasks are sent again (a duplicate is harmless)
        dispatch_pending(publish.state, publish.queue, job.job_id)
        return load_plan(store, layout)
    result = split_input(
        spec, job_id=job.job_id, store=store, layout=layout, now=clock(), on_part=publish
    )
    inputs = tuple(_input_checksum(i) for i in result.inputs)
    store.put_bytes(
        layout.job_manifest(),
        encode_manifest(
            JobManifest(
                job_id=job.job_id,
                name=job.name,
                created_at=job.created_at,
                config=redact_config(job.config),
                inputs=inputs,
            )
        ),
    )
    plan = SplitPlan(
        job_id=job.job_id,
        created_at=clock(),
        batches=len(result.batches),
        parts=part_of(len(result.batches) - 1) + 1 if result.batches else 0,
        records=result.records,
        rejected=result.rejected,
        duplicates=result.duplicates,
        inputs=inputs,
    )
    store.put_bytes(layout.split_done(), encode_manifest(plan), create_only=True)
    log.info(
        "split %d records into %d batches (%d rejected, %d duplicate keys)",
        result.records,
        len(result.batches),
        result.rejected,
        result.duplicates,
    )
    return load_plan(store, layout)


def _input_checksum(info: Any) -> Any:
    from shardflow.manifests import InputChecksum

    return InputChecksum(url=info.url, size=info.size, mtime=info.mtime, sha256=info.sha256)


def dispatch_pending(state: StateStore, queue: Queue, job_id: str) -> int:
    """Send a message for every PENDING task (duplicates are harmless)."""
    sent = 0
    after: str | None = None
    while True:
        page = state.list_tasks(job_id, TaskStatus.PENDING, limit=1000, after=after)
        if page:
            queue.send_many([task_message(job_id, t.task_id) for t in page])
            sent += len(page)
        if len(page) < 1000:
            return sent
        after = page[-1].task_id
