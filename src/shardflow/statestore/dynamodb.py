"""DynamoDbStateStore: the StateStore port on one DynamoDB table.

The table design (keys, indexes, item types) is in :mod:`.dynamodb_schema` and
docs/aws.md; task registration in :mod:`.dynamodb_register`.

Fencing: every versioned write is conditional on the stored version and asks for
``ReturnValuesOnConditionCheckFailure=ALL_OLD``. When the condition fails the old item
tells two cases apart: the stored item is exactly what this call wrote (version + 1 and
the same body: our own earlier try landed, and botocore's retry found it) → success;
anything else → :class:`ConflictError`. A task change with counter deltas is one
``TransactWriteItems`` (the task update and an ADD on one counter shard); a transaction
cancelled by a conflict with another transaction is retried with bounded, jittered
backoff. Everything botocore retries by itself (throttling, 5xx) is left to it.

Reads of single items are strongly consistent; listings through the indexes (tasks by
status, jobs) are eventually consistent on AWS (immediate on moto): a task that just
changed status can show up briefly in its old list, which lease_task tolerates because
it reads the task again and writes fenced.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from shardflow.aws import (
    AwsSettings,
    dynamodb_client,
    parse_aws_url,
    settings_from,
)
from shardflow.errors import ConfigError, ConflictError, NotFoundError
from shardflow.layout import validate_id
from shardflow.models import Event, Job, Task, TaskGroup, TaskStatus
from shardflow.ratelimit.base import BucketState
from shardflow.statestore.base import TaskWrite, cas_each
from shardflow.statestore.codec import (
    check_task_ids,
    decode_json,
    decode_model,
    encode_json,
    encode_model,
)
from shardflow.statestore.dynamodb_buckets import cas_bucket, delete_buckets, get_bucket
from shardflow.statestore.dynamodb_ops import Refused, TableOps, version_of
from shardflow.statestore.dynamodb_register import register_job_tasks
from shardflow.statestore.dynamodb_schema import (
    COUNTER_SHARDS,
    GSI1,
    GSI2,
    JOBS_PARTITION,
    Item,
    batch_write,
    counter_shard,
    counter_update,
    counters_of,
    job_pk,
    jobs_sk,
    key,
    n,
    s,
    status_pk,
    task_sk,
)

log = logging.getLogger("shardflow.state")

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["DynamoDbStateStore", "open_dynamodb_state"]


class DynamoDbStateStore:
    """A StateStore in the DynamoDB table ``table`` (created beforehand: see
    :func:`~shardflow.statestore.dynamodb_schema.create_table_if_missing`). AWS
    failures outside the contract surface as StoreError."""

    def __init__(self, table: str, *, settings: AwsSettings | None = None) -> None:
        self._table = table
        self._settings = settings or AwsSettings()
        self._client: DynamoDBClient = dynamodb_client(self._settings)
        self._ops = TableOps(self._client, table)

    @property
    def url(self) -> str:
        return f"dynamodb://{self._table}{self._settings.query()}"

    @property
    def table(self) -> str:
        return self._table

    @property
    def client(self) -> DynamoDBClient:
        return self._client

    def close(self) -> None:
        self._client.close()

    # -- jobs ----------------------------------------------------------------------------

    def _job_item(self, job: Job, body: str) -> Item:
        return {
            **key(job_pk(job.job_id), "JOB"),
            "GSI2PK": s(JOBS_PARTITION),
            "GSI2SK": s(jobs_sk(job.created_at, job.job_id)),
            "version": n(job.version),
            "status": s(job.status.value),
            "body": s(body),
        }

    def create_job(self, job: Job) -> bool:
        """Create-only: False if a job with this id exists. TypeError for a config that
        is not JSON (nothing is written then)."""
        validate_id(job.job_id, "job id")
        body = encode_model(job).decode()
        try:
            self._ops.conditional(
                "Put",
                {
                    "Item": self._job_item(job, body),
                    "ConditionExpression": "attribute_not_exists(PK)",
                },
            )
        except Refused as refused:
            return refused.ours(body)  # our own earlier try landed: created
        return True

    def get_job(self, job_id: str) -> Job | None:
        item = self._ops.get(job_pk(job_id), "JOB")
        return None if item is None else decode_model(Job, item["body"]["S"])

    def put_job(self, job: Job, expected_version: int) -> Job:
        new = dataclasses.replace(job, version=expected_version + 1)
        body = encode_model(new).decode()
        try:
            self._ops.conditional(
                "Put",
                {
                    "Item": self._job_item(new, body),
                    "ConditionExpression": "#v = :e",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":e": n(expected_version)},
                },
            )
        except Refused as refused:
            self._refused("job", job.job_id, refused, expected_version, body)
        return new

    def _refused(self, kind: str, name: str, refused: Refused, expected: int, body: str) -> None:
        """Return if the refusal found our own write; raise NotFoundError or ConflictError."""
        if refused.old is None:
            raise NotFoundError(f"{kind} {name} not found")
        current = version_of(refused.old)
        if current == expected + 1 and refused.ours(body):
            return
        raise ConflictError(
            f"{kind} {name}: expected version {expected}, current version is {current}"
        )

    def list_jobs(self, limit: int = 50) -> list[Job]:
        if limit <= 0:
            return []
        params = {
            "IndexName": GSI2,
            "KeyConditionExpression": "GSI2PK = :p",
            "ExpressionAttributeValues": {":p": s(JOBS_PARTITION)},
            "ScanIndexForward": False,
            "PaginationConfig": {"MaxItems": limit, "PageSize": min(limit, 100)},
        }
        jobs = (
            (item, decode_model(Job, item["body"]["S"]))
            for item in self._ops.query("list jobs", **params)
        )
        # an index entry is only as good as the item's own keys: a writer of one job's
        # partition could copy the index attributes into an item of its own
        return [job for item, job in jobs if _keyed(item, job_pk(job.job_id), "JOB")]

    def delete_job(self, job_id: str) -> None:
        """Delete every item of the job's partition and the token buckets it registered."""
        requests: list[Item] = []
        everything = self._ops.query(
            f"list the items of job {job_id}",
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": s(job_pk(job_id))},
            ProjectionExpression="PK, SK",
            ConsistentRead=True,
        )
        for item in everything:
            requests.append({"DeleteRequest": {"Key": key(item["PK"]["S"], item["SK"]["S"])}})
            if item["SK"]["S"].startswith("BKT#"):
                bucket = item["SK"]["S"][4:]
                requests.append({"DeleteRequest": {"Key": key(f"BUCKET#{bucket}", "BUCKET")}})
            if len(requests) >= 1000:  # stream: a job may have millions of items
                batch_write(self._client, self._table, requests)
                requests = []
        batch_write(self._client, self._table, requests)

    # -- tasks ---------------------------------------------------------------------------

    def register_tasks(self, tasks: Sequence[Task]) -> int:
        """Insert the tasks that do not exist yet (the first of duplicates in the call)
        and count them per status; return how many. InvalidIdError before any write if
        an id is invalid. See :mod:`.dynamodb_register` for how it stays exact."""
        by_job: dict[str, dict[str, Task]] = {}
        for task in tasks:
            check_task_ids(task)
            by_job.setdefault(task.job_id, {}).setdefault(task.task_id, task)
        return sum(
            register_job_tasks(self._client, self._table, job_id, list(job_tasks.values()))
            for job_id, job_tasks in by_job.items()
        )

    def get_task(self, job_id: str, task_id: str) -> Task | None:
        item = self._ops.get(job_pk(job_id), task_sk(task_id))
        return None if item is None else decode_model(Task, item["body"]["S"])

    def cas_task(self, task: Task, expected_version: int, counters: Mapping[str, int]) -> Task:
        """Write ``task`` as version ``expected_version + 1`` and apply ``counters`` in one
        transaction. ConflictError if the stored version differs, NotFoundError if the
        task does not exist (nothing changes then); our own landed retry is success."""
        check_task_ids(task)
        new = dataclasses.replace(task, version=expected_version + 1)
        body = encode_model(new).decode()
        update = {
            "Key": key(job_pk(task.job_id), task_sk(task.task_id)),
            "UpdateExpression": "SET #b = :b, #v = :v, #s = :s, GSI1PK = :g1, GSI1SK = :g2",
            "ConditionExpression": "#v = :e",
            "ExpressionAttributeNames": {"#b": "body", "#v": "version", "#s": "status"},
            "ExpressionAttributeValues": {
                ":b": s(body),
                ":v": n(new.version),
                ":s": s(new.status.value),
                ":g1": s(status_pk(task.job_id, new.status.value)),
                ":g2": s(task.task_id),
                ":e": n(expected_version),
            },
        }
        deltas = {name: delta for name, delta in counters.items() if delta}
        extra = (
            [counter_update(self._table, task.job_id, counter_shard(task.task_id), deltas)]
            if deltas
            else []
        )
        try:
            self._ops.conditional("Update", update, extra)
        except Refused as refused:
            self._refused("task", f"{task.job_id}/{task.task_id}", refused, expected_version, body)
        return new

    def cas_tasks(self, writes: Sequence[TaskWrite]) -> list[Task | None]:
        """One :meth:`cas_task` per write; a refused one is None."""
        return cas_each(self, writes)

    def list_tasks(
        self,
        job_id: str,
        status: TaskStatus | None = None,
        *,
        limit: int = 1000,
        after: str | None = None,
    ) -> list[Task]:
        """Up to ``limit`` tasks with ``task_id > after`` in task id order: by status
        through GSI1, else from the job's partition; never a scan."""
        if limit <= 0:
            return []
        paging = {"PaginationConfig": {"MaxItems": limit, "PageSize": min(limit, 1000)}}
        if status is None:
            # ids use [a-z0-9_-]: "-" is the least character, so id + "-" is the least
            # id after ``after`` (BETWEEN is inclusive; "TASK$" is past every TASK# key)
            low = task_sk(after) + "-" if after is not None else task_sk("")
            items = self._ops.query(
                f"list tasks of {job_id}",
                KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":pk": s(job_pk(job_id)),
                    ":lo": s(low),
                    ":hi": s("TASK$"),
                },
                ConsistentRead=True,
                **paging,
            )
        else:
            condition = "GSI1PK = :p" + (" AND GSI1SK > :a" if after is not None else "")
            values = {":p": s(status_pk(job_id, status.value))}
            if after is not None:
                values[":a"] = s(after)
            items = self._ops.query(
                f"list {status.value} tasks of {job_id}",
                IndexName=GSI1,
                KeyConditionExpression=condition,
                ExpressionAttributeValues=values,
                **paging,
            )
        tasks = ((item, decode_model(Task, item["body"]["S"])) for item in items)
        pk = job_pk(job_id)
        return [
            task
            for item, task in tasks
            if task.job_id == job_id
            and (status is None or task.status is status)
            and _keyed(item, pk, task_sk(task.task_id))
        ]

    # -- counters ------------------------------------------------------------------------

    def read_counters(self, job_id: str) -> dict[str, int]:
        """Every counter of the job whose sum over the shards is not zero."""
        totals: dict[str, int] = {}
        for item in self._ops.partition(job_id, "CNT#"):
            for name, value in counters_of(item).items():
                totals[name] = totals.get(name, 0) + value
        return {name: value for name, value in totals.items() if value}

    def add_counters(self, job_id: str, deltas: Mapping[str, int]) -> None:
        validate_id(job_id, "job id")
        nonzero = {name: delta for name, delta in deltas.items() if delta}
        if nonzero:
            update = counter_update(self._table, job_id, random.randrange(COUNTER_SHARDS), nonzero)
            self._ops.call(
                "add counters",
                self._client.update_item,
                **{k: v for k, v in update.items() if k != "TableName"},
            )

    # -- events and task groups ----------------------------------------------------------

    def append_event(self, event: Event) -> None:
        """Append to the job's history; the store numbers it (``seq`` is ignored)."""
        validate_id(event.job_id, "job id")
        detail = encode_json(event.detail).decode()
        r = self._ops.call(
            "number an event",
            self._client.update_item,
            Key=key(job_pk(event.job_id), "EVTSEQ"),
            UpdateExpression="ADD #q :one",
            ExpressionAttributeNames={"#q": "seq"},
            ExpressionAttributeValues={":one": n(1)},
            ReturnValues="UPDATED_NEW",
        )
        seq = int(r["Attributes"]["seq"]["N"])
        item = {
            **key(job_pk(event.job_id), f"EVT#{seq:012d}"),
            "at": n(float(event.at)),
            "kind": s(event.kind),
            "actor": s(event.actor),
            "detail": s(detail),
        }
        self._ops.call("append an event", self._client.put_item, Item=item)

    def list_events(self, job_id: str, *, limit: int = 100) -> list[Event]:
        if limit <= 0:
            return []
        items = list(
            self._ops.partition(
                job_id, "EVT#", ScanIndexForward=False, PaginationConfig={"MaxItems": limit}
            )
        )
        return [
            Event(
                job_id=job_id,
                kind=i["kind"]["S"],
                at=float(i["at"]["N"]),
                actor=i["actor"]["S"],
                detail=decode_json(i["detail"]["S"]),
                seq=int(i["SK"]["S"][4:]),
            )
            for i in reversed(items)
        ]

    def put_task_group(self, group: TaskGroup) -> None:
        """Create or replace the group (its handles grow as slots start)."""
        validate_id(group.job_id, "job id")
        validate_id(group.group_id, "group id")
        item = {
            **key(job_pk(group.job_id), f"GRP#{group.group_id}"),
            "body": s(encode_model(group).decode()),
        }
        self._ops.call("put a task group", self._client.put_item, Item=item)

    def list_task_groups(self, job_id: str) -> list[TaskGroup]:
        """The job's groups by round, then group id."""
        groups = [
            decode_model(TaskGroup, i["body"]["S"]) for i in self._ops.partition(job_id, "GRP#")
        ]
        return sorted(groups, key=lambda g: (g.round, g.group_id))

    # -- token buckets (see dynamodb_buckets) -------------------------------------------

    def get_bucket(self, key: str) -> BucketState | None:
        return get_bucket(self._ops, key)

    def cas_bucket(self, state: BucketState, expected_version: int) -> BucketState:
        """Write ``state`` as version ``expected_version + 1`` if the stored version is
        ``expected_version`` (0: create-only). ConflictError otherwise."""
        return cas_bucket(self._ops, state, expected_version)

    def delete_buckets(self, prefix: str) -> int:
        """Delete the token buckets whose key starts with ``prefix``; how many existed."""
        return delete_buckets(self._ops, prefix)


def open_dynamodb_state(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    kms_key_id: str | None = None,
) -> DynamoDbStateStore:
    """Open ``dynamodb://TABLE[?region=…&endpoint=…]``; options in the URL win over the
    keyword values (the config's). ConfigError for a bad table name or option."""
    parsed = parse_aws_url(url, "dynamodb")
    table = parsed.location + (f"/{parsed.path}" if parsed.path else "")
    if not 3 <= len(table) <= 255 or not all(c.isalnum() or c in "_.-" for c in table):
        raise ConfigError(f"{url!r}: invalid DynamoDB table name {table!r}")
    settings = settings_from(
        parsed.options, endpoint_url=endpoint_url, region=region, kms_key_id=kms_key_id
    )
    return DynamoDbStateStore(table, settings=settings)


def _keyed(item: Item, pk: str, sk: str) -> bool:
    """Whether an item read through an index has the table keys its body claims;
    one that does not is logged and left out of the listing."""
    if item.get("PK", {}).get("S") == pk and item.get("SK", {}).get("S") == sk:
        return True
    log.warning(
        "ignoring an index entry whose keys (%s, %s) do not match its body (%s, %s)",
        item.get("PK", {}).get("S"),
        item.get("SK", {}).get("S"),
        pk,
        sk,
    )
    return False
