"""Turning a validated job config into the plain specs that services take.

Services never read the pydantic config directly: they receive these small frozen
values, which keeps them testable without a config file.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from shardflow.backends import AwsOptions
from shardflow.coordinator.retry import FailureThreshold, RetryPolicy
from shardflow.errors import ClassRule
from shardflow.models import ErrorClass
from shardflow.split.spec import SplitSpec

if TYPE_CHECKING:
    from shardflow.config import JobConfig


def split_spec(cfg: JobConfig) -> SplitSpec:
    inp = cfg.input
    paths = (inp.path,) if isinstance(inp.path, str) else tuple(inp.path)
    return SplitSpec(
        paths=paths,
        format=inp.format,
        compression=inp.compression,
        id_field=inp.id_field,
        max_record_bytes=int(inp.max_record_bytes),
        csv_delimiter=inp.csv.delimiter,
        csv_quotechar=inp.csv.quotechar,
        csv_header=inp.csv.header,
        encoding=inp.csv.encoding,
        batch_records=cfg.batching.records,
        batch_bytes=int(cfg.batching.bytes) if cfg.batching.bytes is not None else None,
        batch_function=cfg.batching.function,
    )


def retry_policy(cfg: JobConfig) -> RetryPolicy:
    r = cfg.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        base=float(r.backoff.base),
        cap=float(r.backoff.cap),
        item_attempts=r.item_attempts,
    )


def failure_threshold(cfg: JobConfig) -> FailureThreshold:
    return FailureThreshold.of(
        cfg.retry.tolerated_failure_percent, cfg.retry.tolerated_failure_count
    )


def class_rules(cfg: JobConfig) -> tuple[ClassRule, ...]:
    return cfg.retry.to_class_rules()


def aws_options(cfg: JobConfig) -> AwsOptions:
    b = cfg.backends
    return AwsOptions(endpoint_url=b.endpoint_url, region=b.region, kms_key_id=b.kms_key_id)


def slot_count(cfg: JobConfig, tasks: int) -> int:
    wanted = cfg.resources.slots or os.cpu_count() or 1
    return max(1, min(wanted, tasks))


def heartbeat_interval(cfg: JobConfig) -> float:
    ttl = float(cfg.worker.lease_ttl)
    return float(cfg.worker.heartbeat) if cfg.worker.heartbeat else ttl / 3


_ = ErrorClass  # re-exported for callers that build rules by hand
