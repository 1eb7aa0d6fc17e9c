"""Build the adapters from URLs: the one place that knows which class serves which URL.

Nothing else constructs a store, queue or executor; services receive what these
functions return. AWS adapters are imported only when an AWS URL is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from shardflow.errors import ConfigError
from shardflow.layout import validate_id

if TYPE_CHECKING:
    from shardflow.executors.base import Executor
    from shardflow.objectstore.base import ObjectStore
    from shardflow.queue.base import Queue
    from shardflow.statestore.base import StateStore


@dataclass(frozen=True, slots=True)
class AwsOptions:
    endpoint_url: str | None = None
    region: str | None = None
    kms_key_id: str | None = None


def _scheme(url: str) -> str:
    return urlparse(url).scheme if "://" in url else ""


def open_object_store(url: str, aws: AwsOptions | None = None) -> ObjectStore:
    scheme = _scheme(url)
    if scheme in ("", "file"):
        from shardflow.objectstore.local import open_local_store

        return open_local_store(url)
    if scheme == "s3":
        from shardflow.objectstore.s3 import open_s3_store

        aws = aws or AwsOptions()
        return open_s3_store(
            url, endpoint_url=aws.endpoint_url, region=aws.region, kms_key_id=aws.kms_key_id
        )
    if scheme == "memory":
        from shardflow.objectstore.memory import MemoryObjectStore

        return MemoryObjectStore()
    raise ConfigError(f"backends.storage: unsupported URL {url!r} (use a path, file:// or s3://)")


def open_state_store(url: str, aws: AwsOptions | None = None) -> StateStore:
    scheme = _scheme(url)
    if scheme in ("", "sqlite", "file"):
        from shardflow.statestore.sqlite import open_sqlite_state

        return open_sqlite_state(url)
    if scheme == "dynamodb":
        from shardflow.statestore.dynamodb import open_dynamodb_state

        aws = aws or AwsOptions()
        return open_dynamodb_state(
            url, endpoint_url=aws.endpoint_url, region=aws.region, kms_key_id=aws.kms_key_id
        )
    raise ConfigError(
        f"backends.state: unsupported URL {url!r} (use a path, sqlite:/// or dynamodb://)"
    )


def queue_url(state_url: str, queue: str | None) -> str:
    """The queue follows the state store unless ``backends.queue`` is set."""
    if queue:
        return queue
    if _scheme(state_url) == "dynamodb":
        raise ConfigError(
            "backends.queue: with state on DynamoDB set a queue URL, e.g. sqs://shardflow"
        )
    return state_url


def open_queue(
    url: str,
    job_id: str,
    *,
    max_receives: int = 8,
    aws: AwsOptions | None = None,
    create: bool = True,
) -> Queue:
    """The job's queue; workers pass ``create=False`` (on SQS their role may not create)."""
    validate_id(job_id, "job id")
    scheme = _scheme(url)
    if scheme in ("", "sqlite", "file"):
        from shardflow.queue.local import open_local_queue

        return open_local_queue(url, job_id, max_receives=max_receives)
    if scheme == "sqs":
        from shardflow.queue.sqs import open_sqs_queue

        aws = aws or AwsOptions()
        return open_sqs_queue(
            url,
            job_id,
            endpoint_url=aws.endpoint_url,
            region=aws.region,
            kms_key_id=aws.kms_key_id,
            max_receives=max_receives,
            create=create,
        )
    raise ConfigError(f"backends.queue: unsupported URL {url!r} (use sqlite:/// or sqs://)")


def register_input_schemes(paths: Sequence[str], aws: AwsOptions) -> None:
    """Make ``s3://`` inputs readable (ranged GETs) when the job has any; boto3 is
    imported only then."""
    if any(p.startswith("s3://") for p in paths):
        from shardflow.aws import AwsSettings
        from shardflow.split.s3source import register_s3_source

        register_s3_source(AwsSettings(region=aws.region, endpoint_url=aws.endpoint_url))


def local_workspace(state_url: str, default: Path) -> Path:
    """The workspace folder (logs, scratch): beside a local state file, else ``default``."""
    scheme = _scheme(state_url)
    if scheme in ("", "sqlite", "file"):
        path = urlparse(state_url).path if scheme else state_url
        return Path(path).resolve().parent
    return default.resolve()


def make_executor(name: str, workspace: Path, settings: object | None = None) -> Executor:
    if name == "local":
        from shardflow.executors.local import LocalExecutor

        return LocalExecutor(workspace)
    if name == "slurm":
        from shardflow.executors.slurm import slurm_executor_from_config

        return slurm_executor_from_config(settings, workspace)
    raise ConfigError(f"backends.executor: unknown executor {name!r} (use local or slurm)")
