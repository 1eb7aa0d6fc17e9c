"""SqsQueue against an in-process moto server: delays, visibility and its extension,
the dead-letter queue, depth, batching, encryption, and a duplicate delivery made
harmless by the state store's fenced lease."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shardflow.aws import AwsSettings
from shardflow.errors import ConfigError, NotFoundError
from shardflow.models import Task, TaskStatus
from shardflow.queue.base import SQS_MAX_DELAY_SECONDS, Queue
from shardflow.queue.sqs import SqsQueue, open_sqs_queue
from shardflow.statestore.base import commit_task, lease_task, status_counter
from shardflow.statestore.dynamodb import DynamoDbStateStore

pytest_plugins = ["tests.plugins.moto"]
pytestmark = pytest.mark.aws

JOB = "job-a"


def open_queue(prefix: str, settings: AwsSettings, **kwargs: Any) -> SqsQueue:
    return open_sqs_queue(
        f"sqs://{prefix}",
        JOB,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        **kwargs,
    )


@pytest.fixture
def q(sqs_prefix: str, aws_settings: AwsSettings) -> Iterator[SqsQueue]:
    queue = open_queue(sqs_prefix, aws_settings, max_receives=3)
    yield queue
    queue.delete_queues()
    queue.close()


def test_queues_are_encrypted_with_a_redrive_policy(q: SqsQueue, sqs_prefix: str) -> None:
    assert isinstance(q, Queue)
    assert q.name == f"{sqs_prefix}-{JOB}"
    main = q.client.get_queue_attributes(QueueUrl=q.queue_url, AttributeNames=["All"])
    dlq = q.client.get_queue_attributes(QueueUrl=q.dlq_url, AttributeNames=["All"])
    assert main["Attributes"]["SqsManagedSseEnabled"] == "true"
    assert dlq["Attributes"]["SqsManagedSseEnabled"] == "true"
    redrive = json.loads(main["Attributes"]["RedrivePolicy"])
    assert int(redrive["maxReceiveCount"]) == 3
    assert redrive["deadLetterTargetArn"] == dlq["Attributes"]["QueueArn"]


def test_a_job_named_like_a_dead_letter_queue_gets_queues_of_its_own(
    q: SqsQueue, sqs_prefix: str, aws_settings: AwsSettings
) -> None:
    other = open_sqs_queue(
        f"sqs://{sqs_prefix}",
        f"{JOB}-dlq",
        endpoint_url=aws_settings.endpoint_url,
        region=aws_settings.region,
    )
    try:
        assert {other.queue_url, other.dlq_url}.isdisjoint({q.queue_url, q.dlq_url})
        other.send("for job-a-dlq")
        assert q.dead_letters() == []  # nothing reaches job-a's dead letters
    finally:
        other.delete_queues()
        other.close()


def test_reopening_with_another_max_receives_updates_the_policy(
    q: SqsQueue, sqs_prefix: str, aws_settings: AwsSettings
) -> None:
    again = open_queue(sqs_prefix, aws_settings, max_receives=5)
    attributes = again.client.get_queue_attributes(
        QueueUrl=again.queue_url, AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"]) == 5
    assert again.queue_url == q.queue_url


def test_missing_queue_is_not_created_when_told_not_to(
    sqs_prefix: str, aws_settings: AwsSettings
) -> None:
    with pytest.raises(NotFoundError):
        open_queue(sqs_prefix, aws_settings, create=False)


def test_delayed_message_arrives_after_its_delay(q: SqsQueue) -> None:
    q.send("later", delay_seconds=0.5)  # rounded up to 1 s: SQS counts whole seconds
    assert q.depth().delayed == 1
    assert q.receive() == []
    (message,) = q.receive(wait_seconds=5)  # long poll: returns once it is due
    assert (message.body, message.receive_count) == ("later", 1)


def test_delay_beyond_the_sqs_cap_is_refused(q: SqsQueue) -> None:
    with pytest.raises(ValueError, match="900"):
        q.send("x", delay_seconds=SQS_MAX_DELAY_SECONDS + 1)
    q.send("x", delay_seconds=SQS_MAX_DELAY_SECONDS)
    assert q.depth().delayed == 1


def test_visibility_expiry_redelivers_and_extend_keeps_it_hidden(q: SqsQueue) -> None:
    q.send("task")
    (first,) = q.receive(visibility_timeout=1)
    (second,) = q.receive(visibility_timeout=1, wait_seconds=5)
    assert (second.message_id, second.receive_count) == (first.message_id, 2)
    assert q.extend(second.receipt, 600) is True
    assert q.receive(wait_seconds=2) == []
    assert q.depth().in_flight == 1
    assert q.extend("not-a-receipt", 10) is False
    assert q.delete(second.receipt) is True
    assert q.depth().total == 0


def test_message_moves_to_dead_letters_after_max_receives(q: SqsQueue) -> None:
    message_id = q.send("poison")
    counts = [q.receive(visibility_timeout=0)[0].receive_count for _ in range(3)]
    assert counts == [1, 2, 3]
    assert q.receive() == []
    (dead,) = q.dead_letters()
    assert (dead.message_id, dead.body) == (message_id, "poison")
    assert len(q.dead_letters()) == 1  # peeking leaves it there
    q.purge()
    assert q.dead_letters() == []


def test_send_many_batches_by_count_and_by_size(q: SqsQueue) -> None:
    sizes: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["Entries"]))

    q.client.meta.events.register("before-parameter-build.sqs.SendMessageBatch", count)
    q.send_many([f"m{i}" for i in range(23)])
    big = "x" * 100_000
    q.send_many([big, big, big])
    assert q.depth().visible == 26
    assert sizes == [10, 10, 3, 2, 1]  # at most 10 messages and 256 KiB a batch


def test_duplicate_delivery_is_harmless_with_the_fenced_lease(
    q: SqsQueue, dynamodb_table: str, aws_settings: AwsSettings
) -> None:
    state = DynamoDbStateStore(dynamodb_table, settings=aws_settings)
    state.register_tasks([Task(job_id=JOB, task_id="t1", batch_id="b1")])
    q.send(json.dumps({"task_id": "t1"}))
    # the same message reaches two consumers (its visibility ran out under the first)
    (first,) = q.receive(visibility_timeout=0)
    (second,) = q.receive(visibility_timeout=600)
    assert first.message_id == second.message_id
    outcomes = []
    for owner, message in (("w1", first), ("w2", second)):
        task_id = json.loads(message.body)["task_id"]
        leased = lease_task(state, JOB, task_id, owner=owner, ttl=600, now=10.0)
        if leased is not None:
            commit_task(
                state,
                leased,
                now=11.0,
                result_attempt=leased.attempt,
                items_total=1,
                items_succeeded=1,
                items_failed=0,
                items_rejected=0,
                rows=1,
            )
            outcomes.append(owner)
        q.delete(message.receipt)
    assert outcomes == ["w1"]
    task = state.get_task(JOB, "t1")
    assert task is not None
    assert (task.status, task.attempt) == (TaskStatus.SUCCEEDED, 1)
    assert state.read_counters(JOB) == {
        status_counter(TaskStatus.SUCCEEDED): 1,
        "attempts": 1,
        "items.succeeded": 1,
        "rows": 1,
    }
    assert q.depth().total == 0
    state.close()


@pytest.mark.parametrize(
    "url", ["sqs://", "sqs://bad name", "sqs://p/path", "sqs://p?colour=red", "s3://p"]
)
def test_bad_urls_are_config_errors(url: str, aws_settings: AwsSettings) -> None:
    with pytest.raises(ConfigError):
        open_sqs_queue(url, JOB, endpoint_url=aws_settings.endpoint_url)
