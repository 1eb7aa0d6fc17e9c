"""The IAM policies exercised against moto with IAM enforcement on.

Each role is an IAM user holding its rendered policy (``infra/policies/*.json``, rendered
as Terraform renders it) and calls S3, SQS, DynamoDB and STS with its own signed
credentials on our own in-process moto server, with enforcement switched on per test
(``POST /moto-api/reset-auth`` with ``0``; the switch is process-wide, so it is restored
after each test).

What moto 5.2.5 enforces, and so what these tests prove: the request signature, the
action, and the resource ARN for S3 (bucket/key) and for SQS calls on a queue URL. What
it does not: conditions (a conditional Allow counts as unconditional), policy variables,
session tags, bucket/queue/trust policy conditions; it authorizes every DynamoDB call,
``sqs:CreateQueue`` and ``sqs:GetQueueUrl`` against the resource ``"*"``. Hence two
substitutions, both made only for moto: the worker's ``${aws:PrincipalTag/shardflow-job}``
is replaced by the job id its session tag would carry, and statements naming DynamoDB
actions get ``"*"`` added to their resources, so moto checks the DynamoDB action lists.
Everything moto skips is covered by ``test_policy_conditions.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.infra import JOB_TAG, policy_vars, render_policy

ACCOUNT = "123456789012"
REGION = "eu-west-1"
DENIED = {"AccessDenied", "AccessDeniedException"}


def _moto_policy(role: str, names: dict[str, str], job: str | None = None) -> str:
    """The rendered policy as moto can enforce it (see the module docstring)."""
    document = render_policy(role, _names_vars(names))
    text = json.dumps(document)
    if job is not None:
        text = text.replace("${" + JOB_TAG + "}", job)
    document = json.loads(text)
    for statement in document["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        if any(a.startswith("dynamodb:") for a in actions):
            statement["Resource"] = [*statement["Resource"], "*"]
    return json.dumps(document)


def _names_vars(names: dict[str, str]) -> dict[str, Any]:
    prefix = f"arn:aws:sqs:{REGION}:{ACCOUNT}"
    return policy_vars(
        bucket_arn=f"arn:aws:s3:::{names['bucket']}",
        table_arn=f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{names['table']}",
        queue_arn_prefix=f"{prefix}:{names['queues']}",
        control_queue_arn=f"{prefix}:{names['control']}",
        worker_role_arn=f"arn:aws:iam::{ACCOUNT}:role/{names['worker_role']}",
        input_object_arns=[f"arn:aws:s3:::{names['bucket']}/shardflow/inputs/*"],
    )


class MotoWorld:
    """A moto server with the shardflow resources and one IAM user per role."""

    def __init__(self, endpoint: str, suffix: str) -> None:
        import boto3

        self.endpoint = endpoint
        self.names = {
            "bucket": f"sf-data-{suffix}",
            "table": f"sf-state-{suffix}",
            "queues": f"sf-{suffix}-job",
            "control": f"sf-{suffix}-control",
            "worker_role": f"sf-{suffix}-worker",
        }
        self._boto3 = boto3
        self.keys: dict[str, tuple[str, str]] = {}

    def client(self, service: str, role: str | None = None) -> Any:
        from botocore.config import Config

        key, secret = self.keys[role] if role else ("testing", "testing")
        factory: Any = self._boto3.client  # the service is a runtime string here
        return factory(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def queue_url(self, name: str) -> str:
        return f"{self.endpoint}/{ACCOUNT}/{name}"

    def build(self) -> None:
        n = self.names
        s3 = self.client("s3")
        s3.create_bucket(
            Bucket=n["bucket"], CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        for key in (
            "jobs/job-a/batches/b1.jsonl",
            "jobs/job-b/batches/b1.jsonl",
            "inputs/in.jsonl",
        ):
            s3.put_object(Bucket=n["bucket"], Key=f"shardflow/{key}", Body=b"{}\n")
        ddb = self.client("dynamodb")
        ddb.create_table(
            TableName=n["table"],
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "PK", "AttributeType": "S"},
                {"AttributeName": "SK", "AttributeType": "S"},
            ],
        )
        for job in ("job-a", "job-b"):
            ddb.put_item(TableName=n["table"], Item={"PK": {"S": f"JOB#{job}"}, "SK": {"S": "JOB"}})
        sqs = self.client("sqs")
        queues = [f"{n['queues']}-{job}{dlq}" for job in ("job-a", "job-b") for dlq in ("", "-DLQ")]
        for name in (*queues, n["control"]):
            sqs.create_queue(QueueName=name)
        iam = self.client("iam")
        iam.create_role(
            RoleName=n["worker_role"],
            AssumeRolePolicyDocument=json.dumps(
                render_policy("worker-trust", {"principal_arns": [f"arn:aws:iam::{ACCOUNT}:root"]})
            ),
        )
        users: list[tuple[str, str | None]] = [
            ("worker", "job-a"),  # the job its session tag would name
            ("coordinator", None),
            ("cli", None),
            ("dashboard", None),
        ]
        for role, tagged_job in users:
            user = f"{n['bucket']}-{role}"
            document = _moto_policy(role, n, tagged_job)
            iam.create_user(UserName=user)
            arn = iam.create_policy(PolicyName=user, PolicyDocument=document)["Policy"]["Arn"]
            iam.attach_user_policy(UserName=user, PolicyArn=arn)
            access = iam.create_access_key(UserName=user)["AccessKey"]
            self.keys[role] = (access["AccessKeyId"], access["SecretAccessKey"])

    def set_auth(self, value: str) -> str:
        """POST /moto-api/reset-auth; returns the previous setting."""
        import urllib.request

        # text/plain: a form content type would leave the body out of Flask's request.data
        request = urllib.request.Request(  # noqa: S310 (http to our own server)
            f"{self.endpoint}/moto-api/reset-auth",
            data=value.encode(),
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return str(json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


@pytest.fixture(scope="module")
def moto_world() -> Iterator[MotoWorld]:
    import uuid

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    world = MotoWorld(f"http://{host}:{port}", uuid.uuid4().hex[:8])
    try:
        # moto's auth switch is process-wide: keep it off while building, whatever it was
        previous = world.set_auth("inf")
        try:
            world.build()
        finally:
            world.set_auth(previous)
        yield world
    finally:
        server.stop()


@pytest.fixture
def enforced(moto_world: MotoWorld) -> Iterator[MotoWorld]:
    """IAM enforcement on for one test, restored afterwards (it is process-wide in moto)."""
    previous = moto_world.set_auth("0")
    try:
        yield moto_world
    finally:
        moto_world.set_auth(previous)


def _allowed(call: Callable[[], Any]) -> bool:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as error:
        # moto answers an SQS JSON-protocol call it refuses with an XML body that botocore
        # cannot parse, so the code is lost there: the 403 and the message remain
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        if error.response["Error"]["Code"] in DENIED or (
            status == 403 and "AccessDenied" in str(error)
        ):
            return False
        raise
    return True


def test_moto_worker_writes_only_its_results_and_logs(enforced: MotoWorld) -> None:
    s3 = enforced.client("s3", "worker")
    bucket = enforced.names["bucket"]

    def put(key: str) -> bool:
        return _allowed(lambda: s3.put_object(Bucket=bucket, Key=f"shardflow/{key}", Body=b"x"))

    def get(key: str) -> bool:
        return _allowed(lambda: s3.get_object(Bucket=bucket, Key=f"shardflow/{key}"))

    assert put("jobs/job-a/results/t1/0001.parquet")
    assert put("jobs/job-a/logs/t1/0001.log")
    assert not put("jobs/job-b/results/t1/0001.parquet")
    assert not put("jobs/job-a/output/final.parquet")
    assert not put("jobs/job-a/job.json")
    assert get("jobs/job-a/batches/b1.jsonl")
    assert get("inputs/in.jsonl")
    assert not get("jobs/job-b/batches/b1.jsonl")
    assert not _allowed(
        lambda: s3.delete_object(Bucket=bucket, Key="shardflow/jobs/job-a/results/t1/0001.parquet")
    )


def test_moto_worker_multipart_upload_to_its_results(enforced: MotoWorld) -> None:
    s3 = enforced.client("s3", "worker")
    bucket, key = enforced.names["bucket"], "shardflow/jobs/job-a/results/t2/0001.parquet"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    other = "shardflow/jobs/job-b/results/t2/0001.parquet"
    assert not _allowed(lambda: s3.create_multipart_upload(Bucket=bucket, Key=other))


def test_moto_worker_queue_state_and_sessions(enforced: MotoWorld) -> None:
    sqs = enforced.client("sqs", "worker")
    ddb = enforced.client("dynamodb", "worker")
    sts = enforced.client("sts", "worker")
    own, other = (enforced.queue_url(f"{enforced.names['queues']}-{j}") for j in ("job-a", "job-b"))
    table = enforced.names["table"]
    key = {"PK": {"S": "JOB#job-a"}, "SK": {"S": "JOB"}}

    assert _allowed(lambda: sqs.send_message(QueueUrl=own, MessageBody="t1"))
    assert _allowed(lambda: sqs.receive_message(QueueUrl=own))
    assert not _allowed(lambda: sqs.receive_message(QueueUrl=other))
    assert not _allowed(lambda: sqs.delete_queue(QueueUrl=own))
    # the dead-letter queue is the coordinator's to read (the worker may only look it up,
    # which moto cannot show: it authorizes GetQueueUrl against "*")
    own_dlq = enforced.queue_url(f"{enforced.names['queues']}-job-a-DLQ")
    assert not _allowed(lambda: sqs.receive_message(QueueUrl=own_dlq))
    assert not _allowed(lambda: sqs.create_queue(QueueName=f"{enforced.names['queues']}-job-a"))
    # moto checks only the action for DynamoDB; LeadingKeys is covered by the evaluator tests
    assert _allowed(lambda: ddb.get_item(TableName=table, Key=key))
    assert _allowed(
        lambda: ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET v = :v",
            ExpressionAttributeValues={":v": {"N": "1"}},
        )
    )
    assert not _allowed(lambda: ddb.delete_item(TableName=table, Key=key))
    assert not _allowed(lambda: ddb.scan(TableName=table))
    assert not _allowed(lambda: ddb.delete_table(TableName=table))
    worker_role = f"arn:aws:iam::{ACCOUNT}:role/{enforced.names['worker_role']}"
    assert not _allowed(lambda: sts.assume_role(RoleArn=worker_role, RoleSessionName="escape"))


def test_moto_coordinator_manages_jobs_but_not_inputs_or_the_control_queue(
    enforced: MotoWorld,
) -> None:
    s3 = enforced.client("s3", "coordinator")
    sqs = enforced.client("sqs", "coordinator")
    ddb = enforced.client("dynamodb", "coordinator")
    bucket, table = enforced.names["bucket"], enforced.names["table"]
    job_queue = enforced.queue_url(f"{enforced.names['queues']}-job-a")
    control = enforced.queue_url(enforced.names["control"])

    output = "shardflow/jobs/job-a/output/_SUCCESS"
    assert _allowed(lambda: s3.put_object(Bucket=bucket, Key=output, Body=b""))
    assert _allowed(lambda: s3.delete_object(Bucket=bucket, Key=output))
    assert _allowed(lambda: s3.get_object(Bucket=bucket, Key="shardflow/inputs/in.jsonl"))
    assert not _allowed(
        lambda: s3.put_object(Bucket=bucket, Key="shardflow/inputs/in.jsonl", Body=b"")
    )
    assert _allowed(
        lambda: sqs.set_queue_attributes(QueueUrl=job_queue, Attributes={"DelaySeconds": "0"})
    )
    assert _allowed(lambda: sqs.purge_queue(QueueUrl=job_queue))
    assert _allowed(lambda: sqs.send_message(QueueUrl=control, MessageBody="job-a failed"))
    assert not _allowed(lambda: sqs.delete_queue(QueueUrl=control))
    key = {"PK": {"S": "JOB#job-b"}, "SK": {"S": "JOB"}}
    assert _allowed(lambda: ddb.get_item(TableName=table, Key=key))
    assert not _allowed(lambda: ddb.delete_table(TableName=table))


def test_moto_cli_purges_and_dashboard_never_deletes(enforced: MotoWorld) -> None:
    bucket, table = enforced.names["bucket"], enforced.names["table"]
    job_queue = enforced.queue_url(f"{enforced.names['queues']}-job-b")
    key = {"PK": {"S": "JOB#job-b"}, "SK": {"S": "JOB"}}
    batch = "shardflow/jobs/job-b/batches/b1.jsonl"

    dash_s3, dash_ddb = enforced.client("s3", "dashboard"), enforced.client("dynamodb", "dashboard")
    dash_sqs = enforced.client("sqs", "dashboard")
    assert _allowed(lambda: dash_s3.get_object(Bucket=bucket, Key=batch))
    assert not _allowed(lambda: dash_s3.delete_object(Bucket=bucket, Key=batch))
    assert not _allowed(lambda: dash_s3.put_object(Bucket=bucket, Key=batch, Body=b""))
    assert _allowed(lambda: dash_ddb.get_item(TableName=table, Key=key))
    assert not _allowed(lambda: dash_ddb.delete_item(TableName=table, Key=key))
    assert _allowed(lambda: dash_sqs.send_message(QueueUrl=job_queue, MessageBody="t9"))
    assert not _allowed(lambda: dash_sqs.purge_queue(QueueUrl=job_queue))

    cli_s3, cli_ddb = enforced.client("s3", "cli"), enforced.client("dynamodb", "cli")
    cli_sqs = enforced.client("sqs", "cli")
    assert not _allowed(lambda: cli_s3.put_object(Bucket=bucket, Key=batch, Body=b""))
    assert not _allowed(lambda: cli_ddb.delete_table(TableName=table))
    assert _allowed(lambda: cli_sqs.purge_queue(QueueUrl=job_queue))
    assert _allowed(lambda: cli_ddb.delete_item(TableName=table, Key=key))
    assert _allowed(lambda: cli_s3.delete_object(Bucket=bucket, Key=batch))


# --- the audit log: appended by coordinator, cli and dashboard, never by a worker ---------

AUDIT_WRITERS = ("coordinator", "cli", "dashboard")


def _role_store(world: MotoWorld, role: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The S3ObjectStore at s3://bucket/shardflow, signing with the role's credentials
    (the audit code path itself: HEAD probes, a GET of the previous entry, create-only PUT)."""
    from shardflow.aws import AwsSettings
    from shardflow.objectstore.s3 import S3ObjectStore

    key, secret = world.keys[role]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    settings = AwsSettings(region=REGION, endpoint_url=world.endpoint, max_attempts=1)
    return S3ObjectStore(world.names["bucket"], "shardflow", settings=settings)


@pytest.mark.parametrize("role", AUDIT_WRITERS)
def test_moto_coordinator_cli_and_dashboard_append_audit_entries_but_never_delete_them(
    enforced: MotoWorld, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardflow.errors import StoreError
    from shardflow.security.audit import entry_key, record, verify

    store = _role_store(enforced, role, monkeypatch)
    try:
        first = record(store, actor=f"{role}:test", action="job.pause", job_id="job-a")
        second = record(store, actor=f"{role}:test", action="job.resume", job_id="job-a")
        assert (second.seq, second.prev_hash) == (first.seq + 1, first.hash)
        assert verify(store).ok  # listing and reading the whole log
        with pytest.raises(StoreError, match="AccessDenied"):
            store.delete(entry_key(first.seq))
        assert store.head(entry_key(first.seq)) is not None
    finally:
        store.close()


def test_moto_worker_can_neither_write_nor_delete_the_audit_log(
    enforced: MotoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardflow.errors import StoreError
    from shardflow.security.audit import entry_key, record

    s3 = enforced.client("s3", "worker")
    bucket = enforced.names["bucket"]
    existing = f"shardflow/{entry_key(0)}"
    enforced.set_auth("inf")  # an entry to aim at, written as the administrator
    try:
        enforced.client("s3").put_object(Bucket=bucket, Key=existing, Body=b"{}\n")
    finally:
        enforced.set_auth("0")
    forged = f"shardflow/{entry_key(999_999)}"
    assert not _allowed(lambda: s3.put_object(Bucket=bucket, Key=forged, Body=b"{}\n"))
    assert not _allowed(lambda: s3.put_object(Bucket=bucket, Key=existing, Body=b"{}\n"))
    assert not _allowed(lambda: s3.delete_object(Bucket=bucket, Key=existing))
    assert not _allowed(lambda: s3.get_object(Bucket=bucket, Key=existing))
    store = _role_store(enforced, "worker", monkeypatch)
    try:
        with pytest.raises(StoreError):
            record(store, actor="worker", action="job.cancel", job_id="job-a")
    finally:
        store.close()
