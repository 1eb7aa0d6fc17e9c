"""Token buckets on the DynamoDB state store.

A bucket is its own item (``PK=BUCKET#{key}``), so a hot limit gets a partition of its
own. A registry item in the partition of the key's first segment (``BKT#{key}`` under
``JOB#{job}`` for the usual ``{job}/{limit}`` keys) lets ``delete_buckets`` and
``delete_job`` find a job's buckets with a Query; it is written before the bucket, so no
bucket exists that they would miss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import aws_error
from shardflow.errors import ConflictError
from shardflow.ratelimit.base import BucketState
from shardflow.statestore.codec import decode_model, encode_model
from shardflow.statestore.dynamodb_ops import Refused, TableOps, version_of
from shardflow.statestore.dynamodb_schema import Item, bucket_home, key, n, s


def get_bucket(ops: TableOps, key_: str) -> BucketState | None:
    item = ops.get(f"BUCKET#{key_}", "BUCKET")
    return None if item is None else decode_model(BucketState, item["body"]["S"])


def cas_bucket(ops: TableOps, state: BucketState, expected_version: int) -> BucketState:
    """Write ``state`` as version ``expected_version + 1`` if the stored version is
    ``expected_version`` (0: create-only). ConflictError otherwise."""
    if not state.key:
        raise ValueError("a token bucket needs a key")
    new = dataclasses.replace(state, version=expected_version + 1)
    body = encode_model(new).decode()
    item = {**key(f"BUCKET#{state.key}", "BUCKET"), "version": n(new.version), "body": s(body)}
    if expected_version == 0:
        # the registry item first: a bucket must never exist that delete_buckets misses
        registry = {**key(bucket_home(state.key), f"BKT#{state.key}")}
        ops.call("register a token bucket", ops.client.put_item, Item=registry)
        params: Item = {"Item": item, "ConditionExpression": "attribute_not_exists(PK)"}
    else:
        params = {
            "Item": item,
            "ConditionExpression": "#v = :e",
            "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": {":e": n(expected_version)},
        }
    try:
        ops.conditional("Put", params)
    except Refused as refused:
        if version_of(refused.old) == new.version and refused.ours(body):
            return new
        raise ConflictError(
            f"bucket {state.key}: version {expected_version} is not the stored one "
            f"({version_of(refused.old) or 'none'})"
        ) from None
    return new


def delete_buckets(ops: TableOps, prefix: str) -> int:
    """Delete the token buckets whose key starts with ``prefix``; how many existed.
    A prefix with a ``/`` reads one registry partition; one without scans the
    registry items (a purge-time operation, never on the hot path)."""
    if "/" in prefix:
        registry = ops.query(
            "list token buckets",
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues={
                ":pk": s(bucket_home(prefix)),
                ":sk": s(f"BKT#{prefix}"),
            },
            ConsistentRead=True,
        )
        entries = [(i["PK"]["S"], i["SK"]["S"]) for i in registry]
    else:
        entries = list(_scan_registry(ops, prefix))
    deleted = 0
    for pk, sk in entries:
        r = ops.call(
            "delete a token bucket",
            ops.client.delete_item,
            Key=key(f"BUCKET#{sk[4:]}", "BUCKET"),
            ReturnValues="ALL_OLD",
        )
        deleted += 1 if r.get("Attributes") else 0
        ops.call("unregister a token bucket", ops.client.delete_item, Key=key(pk, sk))
    return deleted


def _scan_registry(ops: TableOps, prefix: str) -> Iterator[tuple[str, str]]:
    paginator = ops.client.get_paginator("scan")
    try:
        for page in paginator.paginate(
            TableName=ops.table,
            FilterExpression="begins_with(SK, :sk)",
            ExpressionAttributeValues={":sk": s(f"BKT#{prefix}")},
            ProjectionExpression="PK, SK",
            ConsistentRead=True,
        ):
            for i in page.get("Items", []):
                yield i["PK"]["S"], i["SK"]["S"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, f"scan token buckets in {ops.table}") from exc
