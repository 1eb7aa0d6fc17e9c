"""SqsQueue: the Queue port on Amazon SQS, one standard queue (and its DLQ) per job.

Queues are named ``{prefix}-{job}`` and ``{prefix}-{job}-DLQ`` (upper case: no job id can
end so); the first is created
with a redrive policy (``maxReceiveCount`` = ``max_receives``) to the second, and both
with server-side encryption (SQS-managed keys, or the configured KMS key).

Where SQS differs from the embedded queue, and what shardflow does about it:

- ``DelaySeconds`` is capped at 900 s (:data:`~shardflow.queue.base.SQS_MAX_DELAY_SECONDS`);
  ``send`` refuses more with ValueError, like every adapter. A longer backoff is the
  caller's: the task waits in the state store (RETRY_WAIT, ``not_before``) and is sent
  again when due.
- Delays and visibility timeouts are whole seconds: fractions are rounded up.
- Receipts are not fenced. SQS accepts ``DeleteMessage`` with a receipt from an earlier
  delivery (AWS "may" delete; moto always does) and a second delete of the same
  receipt, so ``delete`` returns False only for a receipt SQS calls invalid. A stale
  holder deleting the message is harmless: the state store's version decides who
  commits, and a task whose message vanished is re-sent by reconcile.
- Delivery is at least once and unordered; the consumer's fenced lease in the state
  store makes a duplicate delivery a no-op.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import (
    AwsSettings,
    aws_error,
    error_code,
    parse_aws_url,
    settings_from,
    sqs_client,
)
from shardflow.errors import ConfigError, NotFoundError, StoreError
from shardflow.layout import validate_id
from shardflow.queue.base import SQS_MAX_BATCH, Message, QueueDepth
from shardflow.queue.local import (
    MAX_BODY_BYTES,
    check_body,
    check_delay,
    check_max_messages,
    check_max_receives,
    check_visibility,
    check_wait,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

MAX_QUEUE_NAME = 80
DLQ_RETENTION_SECONDS = 1_209_600  # 14 days, SQS's maximum
# Upper case on purpose: job ids are lower case, so no job's queue (``{prefix}-x-dlq`` of a
# job named ``x-dlq``) can ever be another job's dead-letter queue.
DLQ_SUFFIX = "DLQ"
_BAD_RECEIPT = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "InvalidParameterValue",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)
_SEND_TRIES = 5

__all__ = ["SqsQueue", "open_sqs_queue"]


def _seconds(value: float) -> int:
    return math.ceil(value)


class SqsQueue:
    """A Queue on the SQS queue ``name`` with dead-letter queue ``name-DLQ``."""

    def __init__(
        self,
        name: str,
        *,
        settings: AwsSettings | None = None,
        max_receives: int = 8,
        visibility_timeout: float = 60,
        create: bool = True,
    ) -> None:
        self._name = name
        self._dlq_name = f"{name}-{DLQ_SUFFIX}"
        if len(self._dlq_name) > MAX_QUEUE_NAME:
            raise ConfigError(f"queue name {self._dlq_name!r} is longer than {MAX_QUEUE_NAME}")
        self._settings = settings or AwsSettings()
        self._max_receives = check_max_receives(max_receives)
        self._client: SQSClient = sqs_client(self._settings)
        if create:
            self._dlq_url = self._create(
                self._dlq_name, {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
            )
            dlq_arn = self._attributes(self._dlq_url, ["QueueArn"])["QueueArn"]
            redrive = orjson.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
            )
            self._url = self._create(
                name,
                {
                    "RedrivePolicy": redrive.decode(),
                    "VisibilityTimeout": str(_seconds(check_visibility(visibility_timeout))),
                },
            )
        else:
            self._url = self._lookup(name)
            self._dlq_url = self._lookup(self._dlq_name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def queue_url(self) -> str:
        return self._url

    @property
    def dlq_url(self) -> str:
        return self._dlq_url

    @property
    def client(self) -> SQSClient:
        return self._client

    def close(self) -> None:
        self._client.close()

    # -- setup ---------------------------------------------------------------------------

    def _sse(self) -> dict[str, str]:
        if self._settings.kms_key_id:
            return {"KmsMasterKeyId": self._settings.kms_key_id}
        return {"SqsManagedSseEnabled": "true"}

    def _create(self, name: str, attributes: dict[str, str]) -> str:
        wanted = {**attributes, **self._sse()}
        try:
            return self._client.create_queue(QueueName=name, Attributes=wanted)["QueueUrl"]  # type: ignore[arg-type]
        except ClientError as exc:
            if "QueueAlreadyExists" not in error_code(exc):
                raise aws_error(exc, f"create SQS queue {name}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"create SQS queue {name}") from exc
        # it exists with other attributes (another max_receives): make them ours
        url = self._lookup(name)
        try:
            self._client.set_queue_attributes(QueueUrl=url, Attributes=wanted)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"update SQS queue {name}") from exc
        return url

    def _lookup(self, name: str) -> str:
        try:
            return self._client.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if "NonExistentQueue" in error_code(exc) or "QueueDoesNotExist" in error_code(exc):
                raise NotFoundError(f"SQS queue {name} does not exist") from exc
            raise aws_error(exc, f"find SQS queue {name}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"find SQS queue {name}") from exc

    def _attributes(self, url: str, names: list[str]) -> dict[str, str]:
        try:
            r = self._client.get_queue_attributes(QueueUrl=url, AttributeNames=names)  # type: ignore[arg-type]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"read attributes of {url}") from exc
        return {str(k): v for k, v in r.get("Attributes", {}).items()}

    # -- sending -------------------------------------------------------------------------

    def send(self, body: str, *, delay_seconds: float = 0) -> str:
        """Send one message, hidden for ``delay_seconds`` (0–900, rounded up); its id.
        ValueError for a delay out of range or a body over 256 KiB."""
        check_body(body)
        delay = _seconds(check_delay(delay_seconds))
        try:
            r = self._client.send_message(QueueUrl=self._url, MessageBody=body, DelaySeconds=delay)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"send to {self._name}") from exc
        return r["MessageId"]

    def send_many(self, bodies: Sequence[str], *, delay_seconds: float = 0) -> None:
        """Send every body (checked before anything is sent) in batches of at most 10
        messages and 256 KiB; entries SQS refuses are re-sent a bounded number of times."""
        for body in bodies:
            check_body(body)
        delay = _seconds(check_delay(delay_seconds))
        batch: list[str] = []
        size = 0
        for body in bodies:
            length = len(body.encode("utf-8"))
            if batch and (len(batch) == SQS_MAX_BATCH or size + length > MAX_BODY_BYTES):
                self._send_batch(batch, delay)
                batch, size = [], 0
            batch.append(body)
            size += length
        if batch:
            self._send_batch(batch, delay)

    def _send_batch(self, bodies: list[str], delay: int) -> None:
        pending = {str(i): body for i, body in enumerate(bodies)}
        for attempt in range(_SEND_TRIES):
            entries: Any = [
                {"Id": i, "MessageBody": b, "DelaySeconds": delay} for i, b in pending.items()
            ]
            try:
                r = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, f"send to {self._name}") from exc
            failed = r.get("Failed", [])
            if not failed:
                return
            sender = [f for f in failed if f.get("SenderFault")]
            if sender:
                raise StoreError(
                    f"send to {self._name}: {sender[0].get('Code')} {sender[0].get('Message', '')}"
                )
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            time.sleep(min(1.0, 0.05 * 2**attempt))
        raise StoreError(f"send to {self._name}: {len(pending)} messages refused repeatedly")

    # -- receiving -----------------------------------------------------------------------

    def _receive(self, url: str, max_messages: int, visibility: int, wait: int) -> list[Message]:
        try:
            r = self._client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max_messages,
                VisibilityTimeout=visibility,
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"receive from {url.rsplit('/', 1)[-1]}") from exc
        return [
            Message(
                message_id=m["MessageId"],
                body=m["Body"],
                receipt=m["ReceiptHandle"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for m in r.get("Messages", [])
        ]

    def receive(
        self, *, max_messages: int = 1, visibility_timeout: float = 60, wait_seconds: float = 0
    ) -> list[Message]:
        """Up to ``max_messages`` (at most 10 per call: SQS's limit) visible messages,
        hidden for ``visibility_timeout`` seconds; long-polls up to ``wait_seconds``
        (at most 20) while the queue is empty. Both are rounded up to whole seconds."""
        count = min(check_max_messages(max_messages), SQS_MAX_BATCH)
        visibility = _seconds(check_visibility(visibility_timeout))
        wait = _seconds(check_wait(wait_seconds))
        return self._receive(self._url, count, visibility, wait)

    def extend(self, receipt: str, visibility_timeout: float) -> bool:
        """Hide the message for ``visibility_timeout`` more seconds from now (the lease
        heartbeat); False if SQS says the receipt is invalid or not in flight."""
        visibility = _seconds(check_visibility(visibility_timeout))
        try:
            self._client.change_message_visibility(
                QueueUrl=self._url, ReceiptHandle=receipt, VisibilityTimeout=visibility
            )
        except ClientError as exc:
            if error_code(exc) in _BAD_RECEIPT:
                return False
            raise aws_error(exc, f"extend a message of {self._name}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"extend a message of {self._name}") from exc
        return True

    def delete(self, receipt: str) -> bool:
        """Delete the message; False only for a receipt SQS calls invalid (see the
        module notes: SQS does not refuse a stale or repeated receipt)."""
        try:
            self._client.delete_message(QueueUrl=self._url, ReceiptHandle=receipt)
        except ClientError as exc:
            if error_code(exc) in _BAD_RECEIPT:
                return False
            raise aws_error(exc, f"delete a message of {self._name}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"delete a message of {self._name}") from exc
        return True

    def delete_many(self, receipts: Sequence[str]) -> int:
        """Delete in batches of ten (DeleteMessageBatch); return how many SQS accepted.
        An entry SQS refuses for a stale receipt is not counted; any other refusal is
        retried one by one through :meth:`delete`."""
        deleted = 0
        for start in range(0, len(receipts), SQS_MAX_BATCH):
            chunk = receipts[start : start + SQS_MAX_BATCH]
            entries: Any = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(chunk)]
            try:
                r = self._client.delete_message_batch(QueueUrl=self._url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(exc, f"delete messages of {self._name}") from exc
            deleted += len(r.get("Successful", []))
            for failed in r.get("Failed", []):
                if failed.get("Code") not in _BAD_RECEIPT:
                    deleted += self.delete(chunk[int(failed["Id"])])
        return deleted

    def depth(self) -> QueueDepth:
        """Visible, in-flight and delayed messages (SQS's approximate counts)."""
        a = self._attributes(
            self._url,
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        return QueueDepth(
            visible=int(a.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(a.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(a.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def is_empty(self) -> bool:
        """From SQS's approximate counts (they lag by up to a minute)."""
        return self.depth().total == 0

    def dead_letters(self, limit: int = 100) -> list[Message]:
        """Up to ``limit`` messages of the dead-letter queue, left in it: they are
        received with a visibility timeout of 0 and never deleted."""
        seen: dict[str, Message] = {}
        while len(seen) < limit:
            batch = self._receive(self._dlq_url, min(SQS_MAX_BATCH, limit - len(seen)), 0, 0)
            fresh = [m for m in batch if m.message_id not in seen]
            if not fresh:
                break
            seen.update((m.message_id, m) for m in fresh)
        return list(seen.values())

    def purge(self) -> None:
        """Remove every message of the queue and of its dead-letter queue (PurgeQueue;
        on AWS it takes up to 60 s to finish, and a second purge within that is a no-op)."""
        for url in (self._url, self._dlq_url):
            try:
                self._client.purge_queue(QueueUrl=url)
            except ClientError as exc:
                if "PurgeQueueInProgress" not in error_code(exc):
                    raise aws_error(exc, f"purge {url.rsplit('/', 1)[-1]}") from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"purge {url.rsplit('/', 1)[-1]}") from exc

    def delete_queues(self) -> None:
        """Delete the queue and its dead-letter queue (``shardflow purge``)."""
        for url in (self._url, self._dlq_url):
            try:
                self._client.delete_queue(QueueUrl=url)
            except ClientError as exc:
                if "NonExistentQueue" not in error_code(exc):
                    raise aws_error(exc, f"delete {url.rsplit('/', 1)[-1]}") from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"delete {url.rsplit('/', 1)[-1]}") from exc


def queue_name(prefix: str, job_id: str) -> str:
    """``{prefix}-{job}``; ConfigError unless it is a valid SQS name with room for -DLQ."""
    validate_id(job_id, "job id")
    name = f"{prefix}-{job_id}"
    if not prefix or not all(c.isalnum() or c in "-_" for c in prefix):
        raise ConfigError(f"invalid SQS queue prefix {prefix!r}: use letters, digits, - and _")
    if len(f"{name}-{DLQ_SUFFIX}") > MAX_QUEUE_NAME:
        raise ConfigError(
            f"queue name {name!r} too long: SQS allows {MAX_QUEUE_NAME} characters with -DLQ"
        )
    return name


def open_sqs_queue(
    url: str,
    job_id: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    kms_key_id: str | None = None,
    max_receives: int = 8,
    visibility_timeout: float = 60,
    create: bool = True,
) -> SqsQueue:
    """The queue of ``job_id`` under ``sqs://PREFIX[?region=…&endpoint=…]``, created
    (with its DLQ) unless ``create`` is False, when NotFoundError says it is missing."""
    parsed = parse_aws_url(url, "sqs")
    if parsed.path:
        raise ConfigError(f"{url!r}: use sqs://PREFIX (no path)")
    settings = settings_from(
        parsed.options, endpoint_url=endpoint_url, region=region, kms_key_id=kms_key_id
    )
    return SqsQueue(
        queue_name(parsed.location, job_id),
        settings=settings,
        max_receives=max_receives,
        visibility_timeout=visibility_timeout,
        create=create,
    )
