"""The job config's schema: one pydantic model per section, and :class:`JobConfig`.

``extra="forbid"`` everywhere: an unknown key is an error, not a no-op. Every section has
defaults, so a job file needs only ``name``, ``handler`` and ``input``. Cross-field checks
raise errors whose message is final and, where one field is at fault, that name it (the
``field`` context), so the loader can point at its line. The value types and shared checks
come from :mod:`shardflow.configtypes`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shardflow.configslurm import SlurmConfig
from shardflow.configtypes import (
    Duration,
    OneLine,
    Rate,
    Size,
    check_arrow_type,
    check_encoding,
    check_function_ref,
    check_regex,
)
from shardflow.configtypes import Section as _Section
from shardflow.configtypes import custom_error as _custom
from shardflow.errors import ClassRule, InvalidIdError
from shardflow.layout import ID_PATTERN, validate_object_name
from shardflow.models import ErrorClass

__all__ = [
    "AggregateConfig",
    "BackendsConfig",
    "BackoffConfig",
    "BatchingConfig",
    "ClassRuleConfig",
    "CsvConfig",
    "InputConfig",
    "JobConfig",
    "LoggingConfig",
    "OutputConfig",
    "RateLimitConfig",
    "ResourcesConfig",
    "RetryConfig",
    "SlurmConfig",
    "WorkerConfig",
]


def _semantic(message: str, field: str) -> PydanticCustomError:
    """An error about ``field`` raised from a section's cross-field check."""
    return PydanticCustomError("semantic", "{message}", {"message": message, "field": field})


def _check_path_list(value: Any) -> str | list[str]:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise _custom("paths", f"expected a path, URL or glob, or a list of them, got {value!r}")


def _check_limit_name(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise _custom(
            "limit_name",
            f"invalid rate limit name {value!r}: use 1-63 of a-z, 0-9, '_' and '-'",
        )
    return value


def _check_object_name(value: str) -> str:
    try:
        validate_object_name(value)
    except InvalidIdError:
        raise _custom(
            "object_name", f"invalid output name {value!r}: use letters, digits, '.', '_', '-'"
        ) from None
    if value in ("failures", "rejects"):  # output/failures.parquet, output/rejects.parquet
        raise _custom("object_name", f"output name {value!r} is taken by the job's {value} file")
    return value


def _url_checker(field: str, schemes: dict[str, str]) -> AfterValidator:
    """Accept a plain path (when ``""`` is allowed) or a URL whose scheme is in ``schemes``."""

    def check(value: str | None) -> str | None:
        if value is None:
            return value
        scheme, sep, rest = value.partition("://")
        if not sep:
            scheme, rest = "", value
        if scheme not in schemes or not rest:
            kinds = ", ".join(schemes.values())
            raise _custom("url", f"unsupported {field} location {value!r} (use {kinds})")
        return value

    return AfterValidator(check)


class CsvConfig(_Section):
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Field separator.")
    quotechar: str = Field(default='"', min_length=1, max_length=1, description="Quote character.")
    header: bool = Field(default=True, description="Whether the first row holds the column names.")
    encoding: Annotated[str, AfterValidator(check_encoding)] = Field(
        default="utf-8", description="Text encoding of the file, e.g. utf-8 or latin-1."
    )


class InputConfig(_Section):
    path: Annotated[
        str | list[str],
        PlainValidator(_check_path_list),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
                ]
            }
        ),
    ] = Field(
        description="Input files: a local path, glob, file:// or s3:// URL, or a list of them. "
        "Relative paths are relative to the job file's folder."
    )
    format: Literal["jsonl", "csv", "parquet"] | None = Field(
        default=None, description="jsonl, csv or parquet; null guesses it from the file name."
    )
    compression: Literal["auto", "none", "gzip", "zstd"] = Field(
        default="auto", description="auto (from the file name), none, gzip or zstd."
    )
    id_field: str | None = Field(
        default=None,
        min_length=1,
        description="Field whose value is the item key (default: batch:ordinal).",
    )
    max_record_bytes: Size = Field(
        default=1024**2, gt=0, description="Records longer than this are rejected (e.g. 1MiB)."
    )
    csv: CsvConfig = Field(default_factory=CsvConfig, description="CSV reading options.")


class BatchingConfig(_Section):
    records: int | None = Field(default=None, gt=0, description="Records per batch.")
    bytes: Size | None = Field(default=None, gt=0, description="Input bytes per batch, e.g. 64MiB.")
    function: Annotated[str, AfterValidator(check_function_ref)] | None = Field(
        default=None, description="A custom batching function, module:function."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> BatchingConfig:
        chosen = [k for k in ("records", "bytes", "function") if getattr(self, k) is not None]
        if len(chosen) != 1:
            got = " and ".join(chosen) if chosen else "none"
            raise _custom("batching", f"set exactly one of records, bytes or function (got {got})")
        return self


class BackoffConfig(_Section):
    base: Duration = Field(
        default=2.0,
        gt=0,
        description="Longest first retry delay; doubles per attempt. Each delay is drawn "
        "uniformly below it (full jitter), so retries of many tasks spread out.",
    )
    cap: Duration = Field(default=300.0, gt=0, description="Ceiling of the doubling.")

    @model_validator(mode="after")
    def _base_below_cap(self) -> BackoffConfig:
        if self.base > self.cap:
            raise _semantic(f"base ({self.base:g}s) must not exceed cap ({self.cap:g}s)", "base")
        return self


class ClassRuleConfig(_Section):
    error_class: ErrorClass = Field(
        alias="class", description="transient, permanent, infrastructure or unknown."
    )
    exceptions: list[str] = Field(
        default_factory=list, description="Exception class names (plain or module-qualified)."
    )
    message: Annotated[str | None, AfterValidator(check_regex)] = Field(
        default=None, description="A regular expression searched in the error message."
    )
    http_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list, description="HTTP status codes carried by the exception."
    )

    @model_validator(mode="after")
    def _has_criterion(self) -> ClassRuleConfig:
        if not (self.exceptions or self.message is not None or self.http_status):
            raise _custom("rule", "a rule needs exceptions, message or http_status to match on")
        return self


class RetryConfig(_Section):
    max_attempts: int = Field(default=4, ge=1, description="Attempts per task before it fails.")
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig, description="Delay between attempts."
    )
    item_attempts: int = Field(
        default=3, ge=1, description="Tries of a transiently failing item within one attempt."
    )
    tolerated_failure_percent: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="The job fails if more than this % of its items fail; null = 1, unless "
        "tolerated_failure_count is set. With both, exceeding either fails the job.",
    )
    tolerated_failure_count: int | None = Field(
        default=None, ge=0, description="The job fails if more than this many items fail."
    )
    rules: list[ClassRuleConfig] = Field(
        default_factory=list, description="Rules tried before the default error classes."
    )

    def to_class_rules(self) -> tuple[ClassRule, ...]:
        """The rules as :class:`shardflow.errors.ClassRule`, in order."""
        return tuple(
            ClassRule(r.error_class, tuple(r.exceptions), r.message, tuple(r.http_status))
            for r in self.rules
        )


class RateLimitConfig(_Section):
    rate: Rate = Field(description="Tokens per second, e.g. 50/s, 3000/min or 10/h.")
    burst: int | None = Field(
        default=None, ge=1, description="Bucket size; null means max(1, rate per second)."
    )

    @model_validator(mode="after")
    def _default_burst(self) -> RateLimitConfig:
        if self.burst is None:
            self.burst = max(1, math.ceil(self.rate))
        return self


class ResourcesConfig(_Section):
    slots: int | None = Field(
        default=None, ge=1, description="Worker slots; null = the number of cores."
    )
    cpus: int = Field(default=1, ge=1, description="CPUs per slot.")
    memory: Size = Field(
        default=2 * 1024**3,
        ge=2**20,  # a bare number is bytes: "4096" meant as MB would ask Slurm for 1M
        description="Memory per slot, e.g. 2GiB (a bare number is bytes; at least 1MiB).",
    )
    time: Duration = Field(default=3600.0, gt=0, description="Time limit per slot, e.g. 1h.")
    partition: Annotated[str | None, OneLine] = Field(default=None, description="Slurm partition.")
    account: Annotated[str | None, OneLine] = Field(default=None, description="Slurm account.")
    qos: Annotated[str | None, OneLine] = Field(default=None, description="Slurm QOS.")
    extra_sbatch: Annotated[list[str], OneLine] = Field(
        default_factory=list, description="Extra #SBATCH options, e.g. --gres=gpu:1."
    )


class WorkerConfig(_Section):
    lease_ttl: Duration = Field(default=60.0, gt=0, description="A task lease lapses after this.")
    heartbeat: Duration | None = Field(
        default=None, gt=0, description="Lease renewal interval; null = lease_ttl / 3."
    )
    checkpoint_every: int = Field(
        default=20000,
        ge=1,
        description=(
            "Checkpoint after this many items (checked every 256 items, every 16 below"
            " 1,024); a task that ends before its first checkpoint writes none."
        ),
    )
    checkpoint_interval: Duration = Field(
        default=5.0,
        gt=0,
        description="…or after this much time: at most this much work is redone after "
        "a preemption.",
    )
    item_timeout: Duration | None = Field(
        default=None, gt=0, description="Time limit per item (null = none)."
    )
    isolation: bool = Field(
        default=False,
        description="Run the handler in a child process (one item at a time, over a pipe): a "
        "segfault or a hang past `item_timeout` fails only its item. The handler's `ctx` is "
        "the same: its ids, and `acquire`, `report_throttled`, `should_stop` and `metric` "
        "served by the worker, so rate limits, stops and metrics work as without it.",
    )
    scratch: str | None = Field(default=None, description="Node-local folder for checkpoints.")

    @model_validator(mode="after")
    def _heartbeat_below_ttl(self) -> WorkerConfig:
        if self.heartbeat is None:
            self.heartbeat = self.lease_ttl / 3
        elif self.heartbeat >= self.lease_ttl:
            raise _semantic(
                f"heartbeat ({self.heartbeat:g}s) must be shorter than lease_ttl "
                f"({self.lease_ttl:g}s), e.g. a third of it",
                "heartbeat",
            )
        return self


class OutputConfig(_Section):
    format: Literal["parquet", "csv", "sqlite"] = Field(
        default="parquet", description="parquet, csv or sqlite."
    )
    name: Annotated[str, AfterValidator(_check_object_name)] = Field(
        default="results", description="File name of the final dataset (without extension)."
    )
    key_column: str = Field(
        default="_key", min_length=1, description="Column holding the item key."
    )
    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = Field(
        default="zstd", description="Parquet compression codec."
    )
    schema_: dict[str, Annotated[str, AfterValidator(check_arrow_type)]] | None = Field(
        default=None,
        alias="schema",
        description="Declared column types (int64, string, double, bool, timestamp[us], …).",
    )


class AggregateConfig(_Section):
    fan_in: int = Field(
        default=512,
        ge=2,
        description="Not used: results stream into the output in task order as they commit "
        "(the key is still accepted, so that job files that set it load).",
    )


class LoggingConfig(_Section):
    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")


class BackendsConfig(_Section):
    storage: Annotated[
        str, _url_checker("storage", {"": "a path", "file": "file:///abs", "s3": "s3://bucket"})
    ] = Field(
        default=".shardflow/store", description="Object store: a path, file:///abs or s3://b/p."
    )
    state: Annotated[
        str,
        _url_checker(
            "state", {"": "a path", "sqlite": "sqlite:///abs.db", "dynamodb": "dynamodb://p"}
        ),
    ] = Field(
        default=".shardflow/state.db", description="State store: a path, sqlite:/// or dynamodb://."
    )
    queue: Annotated[
        str | None,
        _url_checker("queue", {"": "a path", "sqlite": "sqlite:///abs.db", "sqs": "sqs://name"}),
    ] = Field(
        default=None,
        description=(
            "Queue: null follows a SQLite state; sqlite:/// or sqs://name "
            "(required with a dynamodb:// state)."
        ),
    )
    executor: Literal["local", "slurm"] = Field(default="local", description="local or slurm.")
    endpoint_url: str | None = Field(
        default=None, pattern=r"^https?://", description="AWS endpoint (an emulator such as moto)."
    )
    region: str | None = Field(default=None, description="AWS region.")
    kms_key_id: str | None = Field(
        default=None, description="KMS key for S3/DynamoDB/SQS encryption."
    )

    @model_validator(mode="after")
    def _queue_follows_a_state_that_can_hold_it(self) -> BackendsConfig:
        if self.state.startswith("dynamodb://") and self.queue is None:
            raise _semantic(
                "with state on DynamoDB set a queue URL, e.g. backends.queue: sqs://shardflow",
                "queue",
            )
        return self


class JobConfig(_Section):
    """A job file, validated. Every section has defaults but name, handler and input."""

    name: str = Field(min_length=1, max_length=200, description="Free text naming the job.")
    handler: Annotated[str, AfterValidator(check_function_ref)] = Field(
        description="module.path:function or path/to/file.py:function; the name may be a "
        "class with setup/process/teardown."
    )
    input: InputConfig = Field(description="What to read.")
    batching: BatchingConfig = Field(
        default_factory=lambda: BatchingConfig(records=10000),
        description="How to cut the input into batches (one key).",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries and tolerance.")
    rate_limits: dict[Annotated[str, AfterValidator(_check_limit_name)], RateLimitConfig] = Field(
        default_factory=dict, description="Named token buckets handlers draw from."
    )
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="Slots and what each gets."
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="Worker behaviour.")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig, description="Slurm settings.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="The final dataset.")
    aggregate: AggregateConfig = Field(
        default_factory=AggregateConfig, description="Merging task results."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Log output.")
    backends: BackendsConfig = Field(
        default_factory=BackendsConfig, description="Where state, objects and the queue live."
    )
    secrets: list[str] = Field(
        default_factory=list, description="Field names whose values are redacted when shown."
    )
