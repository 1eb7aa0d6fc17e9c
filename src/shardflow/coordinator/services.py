"""The ports a coordinator uses, built once from the job's config."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shardflow.backends import (
    open_object_store,
    open_queue,
    open_state_store,
    queue_url,
    register_input_schemes,
)
from shardflow.coordinator import specs
from shardflow.executors.base import Executor
from shardflow.objectstore.base import ObjectStore
from shardflow.queue.base import Queue
from shardflow.statestore.base import StateStore

if TYPE_CHECKING:
    from shardflow.config import JobConfig


@dataclass
class Services:
    """The ports a coordinator uses, built once from the job's config."""

    cfg: JobConfig
    state: StateStore
    store: ObjectStore
    executor: Executor
    workspace: Path
    queues: dict[str, Queue] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def queue(self, job_id: str) -> Queue:
        if job_id not in self.queues:
            self.queues[job_id] = open_queue(
                queue_url(self.cfg.backends.state, self.cfg.backends.queue),
                job_id,
                aws=specs.aws_options(self.cfg),
            )
        return self.queues[job_id]


def open_services(cfg: JobConfig, workspace: Path) -> Services:
    from shardflow.backends import make_executor

    aws = specs.aws_options(cfg)
    register_input_schemes(specs.split_spec(cfg).paths, aws)
    return Services(
        cfg=cfg,
        state=open_state_store(cfg.backends.state, aws),
        store=open_object_store(cfg.backends.storage, aws),
        executor=make_executor(cfg.backends.executor, workspace, cfg),
        workspace=workspace,
    )
