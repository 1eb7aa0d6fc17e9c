"""Request plumbing of the DynamoDB state store: calls that surface AWS failures as
StoreError, paginated queries, and fenced (conditional) writes alone or in a
transaction, with the old item on refusal."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import aws_error, error_code, retried
from shardflow.statestore.dynamodb_schema import Item, job_pk, key, s

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_TX_TRIES = 8
_RETRY_REASONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_CHECK_FAILED = "ConditionalCheckFailedException"


class Refused(Exception):
    """A conditional write's condition failed; ``old`` is the stored item, if any."""

    def __init__(self, old: Item | None, retried: bool) -> None:
        super().__init__("condition failed")
        self.old = old
        # only a request sent more than once can find its own earlier try landed
        self.retried = retried

    def ours(self, body: str) -> bool:
        """True if the stored item is the one this (retried) request wrote."""
        return self.retried and self.old is not None and self.old.get("body", {}).get("S") == body


def version_of(item: Item | None) -> int | None:
    return None if item is None or "version" not in item else int(item["version"]["N"])


class TableOps:
    """The requests every item type of the store is made of, on one table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    @property
    def client(self) -> DynamoDBClient:
        return self._client

    @property
    def table(self) -> str:
        return self._table

    def call(self, what: str, fn: Any, **params: Any) -> Any:
        try:
            return fn(TableName=self._table, **params)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"{what} in {self._table}") from exc

    def get(self, pk: str, sk: str) -> Item | None:
        r = self.call("get", self._client.get_item, Key=key(pk, sk), ConsistentRead=True)
        item: Item | None = r.get("Item")
        return item

    def query(self, what: str, **params: Any) -> Iterator[Item]:
        paginator = self._client.get_paginator("query")
        try:
            for page in paginator.paginate(TableName=self._table, **params):
                yield from page.get("Items", [])
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"{what} in {self._table}") from exc

    def partition(self, job_id: str, sk_prefix: str, **extra: Any) -> Iterator[Item]:
        return self.query(
            f"read {sk_prefix} items of job {job_id}",
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues={":pk": s(job_pk(job_id)), ":sk": s(sk_prefix)},
            ConsistentRead=True,
            **extra,
        )

    def conditional(self, op: str, params: Item, extra: Sequence[Item] = ()) -> None:
        """``op`` (Put/Update) with a condition, alone or in a transaction with the
        ``extra`` Updates; raises Refused with the old item when the condition fails."""
        params = {
            "TableName": self._table,
            **params,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if not extra:
            fn = self._client.put_item if op == "Put" else self._client.update_item
            try:
                fn(**params)
                return
            except ClientError as exc:
                if error_code(exc) == _CHECK_FAILED:
                    raise Refused(exc.response.get("Item"), retried(exc)) from exc  # type: ignore[arg-type]
                raise aws_error(exc, f"{op} in {self._table}") from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"{op} in {self._table}") from exc
        items: list[Any] = [{op: params}, *({"Update": e} for e in extra)]
        for attempt in range(_TX_TRIES):
            try:
                self._client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise aws_error(exc, f"transaction in {self._table}") from exc
                reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    raise Refused(reasons[0].get("Item"), retried(exc)) from exc
                codes = {r.get("Code") for r in reasons}
                if not codes & _RETRY_REASONS or attempt == _TX_TRIES - 1:
                    raise aws_error(
                        exc, f"transaction in {self._table} ({sorted(map(str, codes))})"
                    ) from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"transaction in {self._table}") from exc
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
