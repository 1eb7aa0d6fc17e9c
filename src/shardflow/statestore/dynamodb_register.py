"""Batched, idempotent, crash-exact task registration on DynamoDB.

The trade-off: a transaction of 100 conditional puts (``TransactWriteItems``) would make
each chunk atomic, but costs two write units per item and, against moto, copies the
whole table once per item (minutes for 10,000 tasks). A conditional ``PutItem`` per
task is exact but one request each. So registration uses plain batches, made safe by
two small items:

1. a **registration lock** per job (``REGLOCK``, a lease with an expiry): only one
   process registers a job's tasks at a time, so a task read as missing cannot be
   created by anyone else before our batch write lands (nothing but registration
   creates tasks). The holder renews it before each chunk and stops if it was lost.
2. a **ledger** per chunk (``CNT#R#{token}``): written *open*, listing the planned
   task ids and statuses, before the chunk's tasks are written with ``reg_token`` =
   token; then *closed* in one write that sets its counter attributes. Counters are
   summed over ``CNT#`` items, so the chunk's count appears atomically when it closes.
   If the writer dies in between, the next registration of the job (it holds the
   lock) finds the open ledger, reads the planned tasks back and counts exactly those
   that carry its token, then closes it.

Per chunk of up to 500 tasks: one strongly consistent BatchGetItem per 100 (which
tasks exist), one BatchWriteItem per 25 new tasks, and two ledger writes. Re-registering
existing tasks writes nothing and counts nothing.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import aws_error, error_code
from shardflow.errors import StoreError
from shardflow.models import Task, TaskStatus
from shardflow.statestore.base import status_counter
from shardflow.statestore.codec import encode_model
from shardflow.statestore.dynamodb_schema import (
    COUNTER_PREFIX,
    Item,
    batch_get,
    batch_write,
    job_pk,
    key,
    n,
    s,
    task_item,
    task_sk,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

LEDGER_CHUNK = 500
LOCK_TTL = 300.0
LOCK_MARGIN = 60.0  # renew when less than this is left
LEDGER_PREFIX = "CNT#R#"

log = logging.getLogger(__name__)


class RegistrationLock:
    """A per-job lease on registration; a context manager. StoreError if another
    process holds it for longer than ``wait`` seconds, or if it is lost."""

    def __init__(
        self, client: DynamoDBClient, table: str, job_id: str, *, ttl: float = LOCK_TTL
    ) -> None:
        self._client, self._table, self._ttl = client, table, ttl
        self._key = key(job_pk(job_id), "REGLOCK")
        self._owner = secrets.token_hex(8)
        self._valid_until = 0.0
        self._what = f"registration lock of job {job_id} in {table}"

    def __enter__(self) -> RegistrationLock:
        deadline = time.monotonic() + self._ttl + 30
        for round_ in range(10_000):
            now = time.time()
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={**self._key, "owner": s(self._owner), "expires": n(now + self._ttl)},
                    ConditionExpression="attribute_not_exists(PK) OR #e < :now",
                    ExpressionAttributeNames={"#e": "expires"},
                    ExpressionAttributeValues={":now": n(now)},
                )
                break
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise aws_error(exc, f"take the {self._what}") from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"take the {self._what}") from exc
            if time.monotonic() > deadline:
                raise StoreError(f"{self._what} is held by another process")
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**round_)))
        self._valid_until = time.monotonic() + self._ttl - LOCK_MARGIN
        return self

    def check(self) -> None:
        """Renew the lease if it nears its end; StoreError if someone else took it."""
        if time.monotonic() < self._valid_until:
            return
        try:
            self._client.update_item(
                TableName=self._table,
                Key=self._key,
                UpdateExpression="SET #e = :e",
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#e": "expires", "#o": "owner"},
                ExpressionAttributeValues={":e": n(time.time() + self._ttl), ":me": s(self._owner)},
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"renew the {self._what} (lost it?)") from exc
        self._valid_until = time.monotonic() + self._ttl - LOCK_MARGIN

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=self._key,
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": s(self._owner)},
            )
        except ClientError as err:
            if error_code(err) != "ConditionalCheckFailedException":
                log.warning("could not release the %s: %s", self._what, err)
        except BotoCoreError as err:
            log.warning("could not release the %s: %s (it expires by itself)", self._what, err)


def _chunks(tasks: Sequence[Task], size: int) -> Iterator[Sequence[Task]]:
    for start in range(0, len(tasks), size):
        yield tasks[start : start + size]


def _close_ledger(client: DynamoDBClient, table: str, ledger: Item, counts: Counter[str]) -> None:
    names = {"#o": "open", "#p": "planned"}
    values: dict[str, Any] = {}
    sets = []
    for i, (name, count) in enumerate(sorted(counts.items())):
        if count:
            names[f"#c{i}"] = COUNTER_PREFIX + name
            values[f":c{i}"] = n(count)
            sets.append(f"#c{i} = :c{i}")
    expression = ("SET " + ", ".join(sets) + " " if sets else "") + "REMOVE #o, #p"
    params: dict[str, Any] = {
        "TableName": table,
        "Key": ledger,
        "UpdateExpression": expression,
        "ConditionExpression": "attribute_exists(#o)",
        "ExpressionAttributeNames": names,
    }
    if values:
        params["ExpressionAttributeValues"] = values
    try:
        client.update_item(**params)
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, f"close registration ledger {ledger['SK']['S']}") from exc


def _register_chunk(client: DynamoDBClient, table: str, job_id: str, chunk: Sequence[Task]) -> int:
    keys = [key(job_pk(job_id), task_sk(t.task_id)) for t in chunk]
    existing = {item["SK"]["S"] for item in batch_get(client, table, keys, "SK")}
    new = [t for t in chunk if task_sk(t.task_id) not in existing]
    if not new:
        return 0
    token = secrets.token_hex(8)
    ledger = key(job_pk(job_id), f"{LEDGER_PREFIX}{token}")
    planned = orjson.dumps([[t.task_id, t.status.value] for t in new]).decode()
    try:
        client.put_item(TableName=table, Item={**ledger, "open": s("1"), "planned": s(planned)})
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, f"open a registration ledger for job {job_id}") from exc
    requests = []
    for t in new:
        item = task_item(job_id, t.task_id, t.status.value, t.version, encode_model(t).decode())
        item["reg_token"] = s(token)
        requests.append({"PutRequest": {"Item": item}})
    batch_write(client, table, requests)
    _close_ledger(client, table, ledger, Counter(status_counter(t.status) for t in new))
    return len(new)


def recover_ledgers(client: DynamoDBClient, table: str, job_id: str) -> int:
    """Close the open ledgers a dead registration left: count the planned tasks that
    carry the ledger's token. Call it holding the job's registration lock. Returns how
    many ledgers were closed."""
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "PK = :pk AND begins_with(SK, :sk)",
        "FilterExpression": "attribute_exists(#o)",
        "ExpressionAttributeNames": {"#o": "open"},
        "ExpressionAttributeValues": {":pk": s(job_pk(job_id)), ":sk": s(LEDGER_PREFIX)},
        "ConsistentRead": True,
    }
    closed = 0
    try:
        pages = list(client.get_paginator("query").paginate(**params))
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, f"read registration ledgers of job {job_id}") from exc
    for page in pages:
        for ledger in page.get("Items", []):
            token = ledger["SK"]["S"][len(LEDGER_PREFIX) :]
            planned: list[list[str]] = orjson.loads(ledger["planned"]["S"])
            keys = [key(job_pk(job_id), task_sk(task_id)) for task_id, _ in planned]
            mine = {
                item["SK"]["S"]
                for item in batch_get(client, table, keys, "SK, reg_token")
                if item.get("reg_token", {}).get("S") == token
            }
            counts: Counter[str] = Counter(
                status_counter(TaskStatus(status))
                for task_id, status in planned
                if task_sk(task_id) in mine
            )
            _close_ledger(client, table, key(job_pk(job_id), ledger["SK"]["S"]), counts)
            log.warning("closed the registration ledger of a dead process: job %s", job_id)
            closed += 1
    return closed


def register_job_tasks(
    client: DynamoDBClient, table: str, job_id: str, tasks: Sequence[Task]
) -> int:
    """Register one job's tasks (ids valid, no duplicates); the number newly inserted."""
    inserted = 0
    with RegistrationLock(client, table, job_id) as lock:
        recover_ledgers(client, table, job_id)
        for chunk in _chunks(tasks, LEDGER_CHUNK):
            lock.check()
            inserted += _register_chunk(client, table, job_id, chunk)
    return inserted
