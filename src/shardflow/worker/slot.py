"""A worker slot's loop: pull task ids, lease, run, until there is nothing left to do."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shardflow.backends import (
    AwsOptions,
    open_object_store,
    open_queue,
    open_state_store,
    queue_url,
    register_input_schemes,
)
from shardflow.errors import InvalidIdError, NotFoundError, ShardflowError, StopRequested
from shardflow.layout import Layout, LocalPaths, validate_id
from shardflow.models import Event, Job
from shardflow.observability.logging import configure_logging, set_log_fields
from shardflow.queue.base import SQS_MAX_DELAY_SECONDS, Queue
from shardflow.ratelimit.client import make_limiter
from shardflow.statestore.base import SETUP_FAILURES, StateStore, lease_task, lease_wait
from shardflow.worker.context import TaskContext
from shardflow.worker.handler import LoadedHandler, load_handler
from shardflow.worker.task import TaskAttempt, WorkerEnv

log = logging.getLogger("shardflow.worker")


@dataclass
class SlotOptions:
    state_url: str
    job_id: str
    workspace: Path
    slot: str
    endpoint_url: str | None = None
    region: str | None = None
    idle_timeout: float = 10.0
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.time


def build_env(options: SlotOptions, job: Job) -> WorkerEnv:
    from shardflow.config import config_from_snapshot
    from shardflow.coordinator import specs

    snapshot = job.config
    cfg = config_from_snapshot(snapshot["config"])
    aws = specs.aws_options(cfg)
    if options.endpoint_url:
        aws = AwsOptions(options.endpoint_url, options.region or aws.region, aws.kms_key_id)
    state = open_state_store(options.state_url, aws)
    register_input_schemes(specs.split_spec(cfg).paths, aws)
    scratch = Path(cfg.worker.scratch) if cfg.worker.scratch else options.workspace / "scratch"
    return WorkerEnv(
        job=job,
        spec=specs.split_spec(cfg),
        state=state,
        store=open_object_store(cfg.backends.storage, aws),
        queue=open_queue(
            queue_url(cfg.backends.state, cfg.backends.queue),
            job.job_id,
            aws=aws,
            create=False,
        ),
        layout=Layout(job.job_id),
        paths=LocalPaths(options.workspace, scratch),
        slot=options.slot,
        handler=_handler(cfg, Path(snapshot["base_dir"])),
        policy=specs.retry_policy(cfg),
        rules=specs.class_rules(cfg),
        key_column=cfg.output.key_column,
        lease_ttl=float(cfg.worker.lease_ttl),
        heartbeat=specs.heartbeat_interval(cfg),
        checkpoint_every=cfg.worker.checkpoint_every,
        checkpoint_interval=float(cfg.worker.checkpoint_interval),
        log_level=cfg.logging.level,
        item_timeout=float(cfg.worker.item_timeout) if cfg.worker.item_timeout else None,
        output_compression="lz4",
        stop=options.stop,
        limiter=make_limiter(
            state,
            job.job_id,
            list(cfg.rate_limits),
            owner=options.slot,
            # a slot waiting for tokens (a paused limit included) stops on SIGTERM within
            # one of the limiter's sleeps (at most 1.25 s); not Event.wait, whose lock the
            # signal handler's stop.set() could find held by the thread it interrupted
            should_stop=options.stop.is_set,
        ),
        clock=options.clock,
    )


def _handler(cfg: Any, base_dir: Path) -> LoadedHandler:
    if cfg.worker.isolation:
        from shardflow.worker.isolation import IsolatedHandler

        timeout = float(cfg.worker.item_timeout) if cfg.worker.item_timeout else None
        return IsolatedHandler(cfg.handler, base_dir, cfg.retry.to_class_rules(), timeout)
    return load_handler(cfg.handler, base_dir)


def run_slot(options: SlotOptions) -> int:
    """Run the slot loop; 0 when it ended normally (queue empty, stop, pause), 2 on bad use."""
    configure_logging("INFO", json=True)
    set_log_fields(job_id=options.job_id, slot=options.slot)
    try:
        validate_id(options.job_id, "job id")
        state = open_state_store(
            options.state_url, AwsOptions(options.endpoint_url, options.region)
        )
        job = state.get_job(options.job_id)
        if job is None:
            raise NotFoundError(f"job {options.job_id} not found in {options.state_url}")
        env = build_env(options, job)
    except ShardflowError as exc:
        log.error("worker cannot start: %s", exc)
        return 2
    logging.getLogger().setLevel(env.log_level)
    import pyarrow  # noqa: F401  (loaded once per slot, not inside the first task's timing)

    # a class handler's setup and teardown get the slot's ctx: no task (task_id "")
    ctx = TaskContext(
        job_id=env.job.job_id,
        task_id="",
        batch_id="",
        attempt=0,
        slot=env.slot,
        logger=logging.getLogger("shardflow.handler"),
        limiter=env.limiter,
        should_stop=env.stop.is_set,
    )
    setup = env.handler.setup
    try:
        if setup is not None:
            setup(ctx)
    except Exception as exc:
        _setup_failed(env, exc)
        env.handler.close()
        env.limiter.close()
        return SETUP_FAILED
    try:
        return _loop(env, options)
    finally:
        try:
            if env.handler.teardown is not None:
                env.handler.teardown(ctx)
        except StopRequested:
            log.warning("the handler's teardown was stopped while it waited for tokens")
        finally:
            env.handler.close()
            env.limiter.close()  # unspent tokens go back to their buckets


SETUP_FAILED = 3
"""A slot's exit code when the handler's setup raised (it took no task)."""


def _setup_failed(env: WorkerEnv, exc: Exception) -> None:
    """Log the handler's setup error and tell the coordinator (a counter and an event with
    the error, redacted), which fails the job when no slot can start."""
    from shardflow.security.redact import Redactor

    error = Redactor.from_environ().redact(f"{type(exc).__name__}: {exc}")[:500]
    log.error("the handler's setup failed; this slot takes no task: %s", error, exc_info=True)
    try:
        env.state.add_counters(env.job.job_id, {SETUP_FAILURES: 1})
        env.state.append_event(
            Event(env.job.job_id, "setup_failed", env.clock(), env.slot, {"error": error})
        )
    except ShardflowError as store_exc:
        log.warning("could not record the setup failure: %s", store_exc)


def _loop(env: WorkerEnv, options: SlotOptions) -> int:
    idle_since = options.clock()
    job_checked = 0.0
    while not options.stop.is_set():
        now = options.clock()
        if now - job_checked > 2.0:
            job = env.state.get_job(env.job.job_id)
            job_checked = now
            if job is None or job.status.is_final or job.cancel_requested:
                log.info("job is %s: slot exits", "gone" if job is None else job.status)
                return 0
            if job.paused:
                log.info("job is paused: slot exits")
                return 0
        messages = env.queue.receive(max_messages=1, visibility_timeout=env.lease_ttl)
        if not messages:
            depth = env.queue.depth()
            if depth.total == 0 or options.clock() - idle_since > options.idle_timeout:
                return 0
            # messages are delayed (retries) or in flight elsewhere: wait for one
            messages = env.queue.receive(
                max_messages=1, visibility_timeout=env.lease_ttl, wait_seconds=0.5
            )
            if not messages:
                continue
        message = messages[0]
        try:
            body = orjson.loads(message.body)
            task_id = validate_id(str(body["task_id"]), "task id")
            if body.get("job_id") != env.job.job_id:
                raise InvalidIdError(f"message for another job: {body.get('job_id')!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidIdError) as exc:
            log.error("dropping a malformed queue message: %s", exc)
            env.queue.delete(message.receipt)
            continue
        task = lease_task(
            env.state,
            env.job.job_id,
            task_id,
            owner=options.slot,
            ttl=env.lease_ttl,
            now=options.clock(),
            max_attempts=env.policy.max_attempts,
        )
        if task is None:
            set_aside(
                env.state, env.queue, env.job.job_id, message.receipt, task_id, options.clock()
            )
            continue
        outcome = TaskAttempt(env, task, message.receipt).run()
        log.info("task %s: %s", task_id, outcome)
        idle_since = options.clock()
        if outcome == "released":
            return 0
    return 0


def set_aside(
    state: StateStore, queue: Queue, job_id: str, receipt: str, task_id: str, now: float
) -> None:
    """A delivery that could not lease its task. Final (or gone): a duplicate, deleted.
    Held by a lease or waiting for its backoff: the message comes back when that ends,
    so a task whose holder died needs no coordinator to be taken over."""
    task = state.get_task(job_id, task_id)
    wait = None if task is None else lease_wait(task, now)
    if wait is None:
        queue.delete(receipt)
    else:
        # a long backoff is looked at again every 15 minutes at the most
        queue.extend(receipt, min(wait + 0.1, SQS_MAX_DELAY_SECONDS))
