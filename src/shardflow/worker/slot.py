"""A worker slot's loop: pull task ids, lease, run, until there is nothing left to do."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
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
from shardflow.catalog import TaskCatalog
from shardflow.errors import (
    HandlerLoadError,
    InvalidIdError,
    NotFoundError,
    ShardflowError,
    StopRequested,
)
from shardflow.layout import Layout, LocalPaths, validate_id
from shardflow.models import Event, Job, JobStatus
from shardflow.observability.logging import configure_logging, set_log_fields
from shardflow.queue.base import SQS_MAX_BATCH, SQS_MAX_DELAY_SECONDS, Message, Queue
from shardflow.ratelimit.client import make_limiter
from shardflow.statestore.base import (
    LOAD_FAILURES,
    SETUP_FAILURES,
    StateStore,
    lease_task,
    lease_wait,
)
from shardflow.worker.commit import CommitGroup
from shardflow.worker.context import TaskContext
from shardflow.worker.handler import LoadedHandler, check_handler, load_handler
from shardflow.worker.items import ItemRunner
from shardflow.worker.lease import LeaseKeeper
from shardflow.worker.task import Finished, SlotTools, TaskAttempt, WorkerEnv

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
        result_codec="lz4" if cfg.backends.storage.startswith("s3://") else None,
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

        # the child loads the handler; what can be known without running it is known now
        found = check_handler(cfg.handler, base_dir)
        if found.problem:
            raise HandlerLoadError(found.problem)
        timeout = float(cfg.worker.item_timeout) if cfg.worker.item_timeout else None
        return IsolatedHandler(cfg.handler, base_dir, cfg.retry.to_class_rules(), timeout)
    return load_handler(cfg.handler, base_dir)


def run_slot(options: SlotOptions) -> int:
    """Run the slot loop; 0 when it ended normally (queue empty, stop, pause), 2 on bad use,
    3 (:data:`SETUP_FAILED`) when the handler cannot be loaded or set up (recorded for the
    coordinator, which fails the job rather than start slots that would do the same)."""
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
    except HandlerLoadError as exc:
        # the handler cannot be loaded: no slot ever will, so the coordinator is told and
        # fails the job at once instead of starting more slots
        _record_start_failure(state, options, LOAD_FAILURES, "handler_load_failed", str(exc))
        log.error("the handler cannot be loaded; this slot takes no task: %s", exc)
        return SETUP_FAILED
    except ShardflowError as exc:
        log.error("worker cannot start: %s", exc)
        return 2
    logging.getLogger().setLevel(env.log_level)
    # task log files are made on their first record, in this folder
    env.paths.job_log_dir(env.job.job_id).mkdir(parents=True, exist_ok=True)
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
"""A slot's exit code when the handler could not be loaded or its setup raised (it took
no task)."""


def _setup_failed(env: WorkerEnv, exc: Exception) -> None:
    """Log the handler's setup error and tell the coordinator (a counter and an event with
    the error, redacted), which fails the job when no slot can start."""
    log.error("the handler's setup failed; this slot takes no task: %s", exc, exc_info=True)
    error = f"{type(exc).__name__}: {exc}"
    _record_start_failure(env.state, env, SETUP_FAILURES, "setup_failed", error)


def _record_start_failure(
    state: StateStore, slot: SlotOptions | WorkerEnv, counter: str, kind: str, error: str
) -> None:
    """Count a slot that could not start and record why (redacted) in the job's events."""
    from shardflow.security.redact import Redactor

    job_id = slot.job.job_id if isinstance(slot, WorkerEnv) else slot.job_id
    text = Redactor.from_environ().redact(error)[:500]
    try:
        state.add_counters(job_id, {counter: 1})
        state.append_event(Event(job_id, kind, slot.clock(), slot.slot, {"error": text}))
    except ShardflowError as store_exc:
        log.warning("could not record why the slot could not start: %s", store_exc)


def _loop(env: WorkerEnv, options: SlotOptions) -> int:
    leases = LeaseKeeper(
        env.state, env.queue, ttl=env.lease_ttl, interval=env.heartbeat, clock=env.clock
    )
    tools = SlotTools(
        leases=leases,
        catalog=TaskCatalog(env.store, env.layout),
        items=ItemRunner(
            handler=env.handler,
            policy=env.policy,
            rules=env.rules,
            sleep=env.sleep,
            item_timeout=env.item_timeout,
            secret_fields=env.job.config.get("config", {}).get("secrets", ()),
            id_field=env.spec.id_field,
            check_every=env.checkpoint_every,
        ),
    )
    slot = Slot(env, options, tools, CommitGroup(env, leases))
    try:
        return slot.run()
    finally:
        slot.close()


class Slot:
    """The loop of one slot: take a message, lease its task, run the attempt, commit in
    groups. Messages are received a few at a time when tasks are short (enough for about
    :data:`PREFETCH_SECONDS` of work), one at a time when they are long."""

    def __init__(
        self, env: WorkerEnv, options: SlotOptions, tools: SlotTools, group: CommitGroup
    ) -> None:
        self.env = env
        self.options = options
        self.tools = tools
        self.group = group
        self.inbox: deque[Message] = deque()
        self.task_seconds = 1.0  # a moving mean of an attempt's wall time
        self.job_checked = -1e18
        self.splitting = True
        self.outcomes: Counter[str] = Counter()
        self.exit_reason = "stop requested"

    def run(self) -> int:
        env, options = self.env, self.options
        idle_since = options.clock()
        while not options.stop.is_set():
            if not self._job_allows_work():
                return 0
            message = self._next_message()
            if message is None:
                self._log(self.group.flush())
                if self._nothing_left(options.clock() - idle_since):
                    self.exit_reason = "no work left"
                    return 0
                continue
            task_id = self._task_id(message)
            if task_id is None:
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
            started = time.monotonic()
            self.tools.leases.hold(task, message.receipt)
            outcome = TaskAttempt(env, self.tools, task, message.receipt).run()
            self.task_seconds += (time.monotonic() - started - self.task_seconds) / 8
            idle_since = options.clock()
            if isinstance(outcome, Finished):
                self.group.add(outcome)
                if self.group.due():
                    self._log(self.group.hand_off())
                continue
            self.tools.leases.release(task_id)
            self._log({task_id: outcome})
            if outcome == "released":
                return 0
        return 0

    def close(self) -> None:
        """Commit what is finished, hand back messages not started, stop the heartbeat."""
        try:
            self._log(self.group.flush())
            if self.inbox:
                for message in self.inbox:
                    self.env.queue.extend(message.receipt, 0)
                self.inbox.clear()
        finally:
            self.group.close()
            self.tools.leases.stop()
        done = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))
        log.info("slot exits (%s); tasks: %s", self.exit_reason, done or "none")

    def _log(self, outcomes: dict[str, str]) -> None:
        self.outcomes.update(outcomes.values())
        for task_id, outcome in outcomes.items():
            if outcome != "succeeded":
                log.info("task %s: %s", task_id, outcome)

    def _job_allows_work(self) -> bool:
        """Look at the job every 2 s: False once it is final, cancelled or paused."""
        now = self.options.clock()
        if now - self.job_checked <= 2.0:
            return True
        self.job_checked = now
        job = self.env.state.get_job(self.env.job.job_id)
        if job is None or job.status.is_final or job.cancel_requested:
            self.exit_reason = f"job {'gone' if job is None else job.status}"
            return False
        if job.paused:
            self.exit_reason = "job paused"
            return False
        self.splitting = job.status in (JobStatus.PENDING, JobStatus.SPLITTING)
        return True

    def _next_message(self) -> Message | None:
        if not self.inbox:
            count = max(1, min(SQS_MAX_BATCH, round(PREFETCH_SECONDS / self.task_seconds)))
            self.inbox.extend(
                self.env.queue.receive(max_messages=count, visibility_timeout=self.env.lease_ttl)
            )
        return self.inbox.popleft() if self.inbox else None

    def _nothing_left(self, idle: float) -> bool:
        """The queue had nothing: True when the slot should exit, else after waiting a
        little for a message (retries in backoff, tasks held elsewhere, a split going on)."""
        env = self.env
        if not self.splitting:
            if env.queue.is_empty() or idle > self.options.idle_timeout:
                return True
        elif idle > max(self.options.idle_timeout, SPLIT_WAIT_SECONDS):
            return True
        self.inbox.extend(
            env.queue.receive(max_messages=1, visibility_timeout=env.lease_ttl, wait_seconds=0.5)
        )
        return False

    def _task_id(self, message: Message) -> str | None:
        env = self.env
        try:
            body = orjson.loads(message.body)
            task_id = validate_id(str(body["task_id"]), "task id")
            if body.get("job_id") != env.job.job_id:
                raise InvalidIdError(f"message for another job: {body.get('job_id')!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, InvalidIdError) as exc:
            log.error("dropping a malformed queue message: %s", exc)
            env.queue.delete(message.receipt)
            return None
        return task_id


PREFETCH_SECONDS = 0.05
"""About how much work a slot receives at once: short tasks come several to a receive."""
SPLIT_WAIT_SECONDS = 120.0
"""How long a slot waits for the first tasks of a job whose split is still running."""


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
