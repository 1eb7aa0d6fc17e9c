"""The single-table design of the DynamoDB state store, and the batch helpers over it.

One table holds every job. Keys (all strings; GSI attributes only where shown)::

    job               PK JOB#{job}         SK JOB
                      GSI2PK JOBS          GSI2SK {created_at:017.6f}#{job}
    task              PK JOB#{job}         SK TASK#{task}
                      GSI1PK JOB#{job}#S#{status}   GSI1SK {task}
    counter shard     PK JOB#{job}         SK CNT#{shard:03d}
    registration      PK JOB#{job}         SK CNT#R#{token}   (ledger of a registration)
    registration lock PK JOB#{job}         SK REGLOCK
    event sequence    PK JOB#{job}         SK EVTSEQ
    event             PK JOB#{job}         SK EVT#{seq:012d}
    task group        PK JOB#{job}         SK GRP#{group}
    bucket registry   PK JOB#{segment}     SK BKT#{bucket key}  (segment: the key up to "/")
    token bucket      PK BUCKET#{key}      SK BUCKET

GSI1 lists a job's tasks by status (the status is part of the index key, so a status
change moves the task between index partitions); GSI2 lists jobs newest first. Both
project all attributes. Bodies are the models' JSON (attribute ``body``); the fenced
attributes (``version``, ``status``) are real attributes so conditions can read them.
Counters are attributes ``n:{name}`` (numbers) summed over every ``CNT#`` item.

Tables are on-demand (PAY_PER_REQUEST) with server-side encryption through KMS
(the AWS-managed key, or the configured one).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import aws_error, error_code
from shardflow.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

COUNTER_SHARDS = 16
COUNTER_PREFIX = "n:"
GSI1 = "GSI1"
GSI2 = "GSI2"
JOBS_PARTITION = "JOBS"
BATCH_GET_MAX = 100  # BatchGetItem takes at most 100 keys
BATCH_WRITE_MAX = 25  # BatchWriteItem takes at most 25 requests
_BATCH_TRIES = 10  # rounds of unprocessed items before giving up
_KEYS = ("PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK")

Item = dict[str, Any]


def job_pk(job_id: str) -> str:
    return f"JOB#{job_id}"


def task_sk(task_id: str) -> str:
    return f"TASK#{task_id}"


def status_pk(job_id: str, status: str) -> str:
    return f"JOB#{job_id}#S#{status}"


def jobs_sk(created_at: float, job_id: str) -> str:
    return f"{created_at:017.6f}#{job_id}"


def counter_shard(task_id: str) -> int:
    """A stable shard for a task id (crc32: the same in every process, unlike hash())."""
    return zlib.crc32(task_id.encode("utf-8")) % COUNTER_SHARDS


def counter_sk(shard: int) -> str:
    return f"CNT#{shard:03d}"


def bucket_home(key: str) -> str:
    """The partition of a token bucket's registry item: its key's first segment's job."""
    return job_pk(key.split("/", 1)[0]) if "/" in key else "BUCKETS"


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int | float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def key(pk: str, sk: str) -> Item:
    return {"PK": s(pk), "SK": s(sk)}


def counter_update(table: str, job_id: str, shard: int, deltas: Mapping[str, int]) -> Item:
    """An ``Update`` (ADD) of counter deltas on one shard, for a call or a transaction."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses: list[str] = []
    for i, (name, delta) in enumerate(sorted(deltas.items())):
        names[f"#c{i}"] = COUNTER_PREFIX + name
        values[f":c{i}"] = n(int(delta))
        clauses.append(f"#c{i} :c{i}")
    return {
        "TableName": table,
        "Key": key(job_pk(job_id), counter_sk(shard)),
        "UpdateExpression": "ADD " + ", ".join(clauses),
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def counters_of(item: Item) -> dict[str, int]:
    return {
        name[len(COUNTER_PREFIX) :]: int(value["N"])
        for name, value in item.items()
        if name.startswith(COUNTER_PREFIX) and "N" in value
    }


# -- table ---------------------------------------------------------------------------


def table_spec(table: str, kms_key_id: str | None = None) -> dict[str, Any]:
    """The CreateTable request of the design above."""
    sse: dict[str, Any] = {"Enabled": True}
    if kms_key_id:
        sse.update(SSEType="KMS", KMSMasterKeyId=kms_key_id)

    def index(name: str) -> dict[str, Any]:
        return {
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": f"{name}PK", "KeyType": "HASH"},
                {"AttributeName": f"{name}SK", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }

    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in _KEYS],
        "KeySchema": [
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [index(GSI1), index(GSI2)],
        "SSESpecification": sse,
    }


def create_table_if_missing(
    client: DynamoDBClient, table: str, *, kms_key_id: str | None = None
) -> bool:
    """Create the table (and wait until it is ACTIVE) unless it exists; True if created."""
    try:
        client.create_table(**table_spec(table, kms_key_id))
    except ClientError as exc:
        if error_code(exc) == "ResourceInUseException":
            return False
        raise aws_error(exc, f"create DynamoDB table {table}") from exc
    client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 90}
    )
    return True


def table_problems(description: Mapping[str, Any]) -> list[str]:
    """What a DescribeTable result lacks compared with :func:`table_spec` (empty: fine)."""
    problems: list[str] = []
    keys = {(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])}
    if keys != {("PK", "HASH"), ("SK", "RANGE")}:
        problems.append(f"key schema is {sorted(keys)}, expected PK (HASH) + SK (RANGE)")
    indexes = {i["IndexName"]: i for i in description.get("GlobalSecondaryIndexes", [])}
    for name in (GSI1, GSI2):
        index = indexes.get(name)
        if index is None:
            problems.append(f"global secondary index {name} ({name}PK, {name}SK) is missing")
            continue
        got = {(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]}
        if got != {(f"{name}PK", "HASH"), (f"{name}SK", "RANGE")}:
            problems.append(f"index {name} has keys {sorted(got)}")
        if index.get("Projection", {}).get("ProjectionType") != "ALL":
            problems.append(f"index {name} must project ALL attributes")
    sse = description.get("SSEDescription", {})
    if sse.get("Status") not in ("ENABLED", "ENABLING"):
        problems.append("server-side encryption with KMS is not enabled")
    return problems


# -- batches -------------------------------------------------------------------------


def _pause(round_: int) -> None:
    # full jitter, capped: unprocessed items mean the table is throttling us
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2**round_)))


def batch_get(
    client: DynamoDBClient, table: str, keys: Sequence[Item], projection: str | None = None
) -> list[Item]:
    """Strongly consistent BatchGetItem of any number of keys, retrying unprocessed keys
    with backoff; StoreError if some remain after a bounded number of rounds."""
    found: list[Item] = []
    for start in range(0, len(keys), BATCH_GET_MAX):
        request: dict[str, Any] = {
            "Keys": list(keys[start : start + BATCH_GET_MAX]),
            "ConsistentRead": True,
        }
        if projection:
            request["ProjectionExpression"] = projection
        pending: Any = {table: request}
        for round_ in range(_BATCH_TRIES):
            try:
                response = client.batch_get_item(RequestItems=pending)
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, f"batch get from {table}") from exc
            found.extend(response.get("Responses", {}).get(table, []))
            pending = response.get("UnprocessedKeys") or {}
            if not pending:
                break
            _pause(round_)
        else:
            raise StoreError(f"batch get from {table}: keys still unprocessed (throttled)")
    return found


def batch_write(client: DynamoDBClient, table: str, requests: Sequence[Item]) -> None:
    """BatchWriteItem of any number of Put/Delete requests, retrying unprocessed ones
    with backoff; StoreError if some remain after a bounded number of rounds."""
    for start in range(0, len(requests), BATCH_WRITE_MAX):
        pending: Any = {table: list(requests[start : start + BATCH_WRITE_MAX])}
        for round_ in range(_BATCH_TRIES):
            try:
                response = client.batch_write_item(RequestItems=pending)
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, f"batch write to {table}") from exc
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                break
            _pause(round_)
        else:
            raise StoreError(f"batch write to {table}: items still unprocessed (throttled)")


def task_item(task_job: str, task_id: str, status: str, version: int, body: str) -> Item:
    """The full item of a task (register_tasks writes it; cas_task updates its fields)."""
    return {
        **key(job_pk(task_job), task_sk(task_id)),
        "GSI1PK": s(status_pk(task_job, status)),
        "GSI1SK": s(task_id),
        "version": n(version),
        "status": s(status),
        "body": s(body),
    }
