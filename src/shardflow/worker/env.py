"""What a worker slot carries: the ports, the job's settings, and the stop signal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import ClassRule
from shardflow.layout import Layout, LocalPaths
from shardflow.models import Job
from shardflow.objectstore.base import ObjectStore
from shardflow.queue.base import Queue
from shardflow.security.redact import RedactingFilter
from shardflow.split.spec import SplitSpec
from shardflow.statestore.base import StateStore
from shardflow.worker.context import RateLimiter
from shardflow.worker.handler import LoadedHandler


@dataclass
class WorkerEnv:
    """Everything an attempt needs; built once per slot by the entry point."""

    job: Job
    spec: SplitSpec
    state: StateStore
    store: ObjectStore
    queue: Queue
    layout: Layout
    paths: LocalPaths
    slot: str
    handler: LoadedHandler
    policy: RetryPolicy
    rules: tuple[ClassRule, ...]
    key_column: str
    lease_ttl: float
    heartbeat: float
    checkpoint_every: int
    checkpoint_interval: float
    log_level: str = "INFO"
    item_timeout: float | None = None
    # attempt results are intermediate Arrow IPC: on a local store uncompressed (writing
    # and reading them is a copy), elsewhere lz4 (fewer bytes to send); the final output
    # gets the configured codec
    result_codec: str | None = "lz4"
    stop: threading.Event = field(default_factory=threading.Event)
    # for the task log files: the secret values of the slot's environment, read once
    redacting: RedactingFilter = field(default_factory=RedactingFilter)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


def task_message(job_id: str, task_id: str) -> str:
    return orjson.dumps({"job_id": job_id, "task_id": task_id}).decode()
