"""What moto cannot check about our policies, checked by evaluating them.

moto 5.2.5 ignores IAM conditions, policy variables, session tags, bucket policies and
trust-policy conditions (see ``test_iam_policies.py``). These tests evaluate the rendered
documents with the evaluator in ``tests/infra/__init__.py``: the worker's session tag
``shardflow-job`` bound into resource ARNs and ``dynamodb:LeadingKeys``, prefix-scoped
listing, the worker trust policy, queue ARNs for ``sqs:CreateQueue`` and
``sqs:GetQueueUrl``, and the TLS and encryption conditions of the bucket and queue
policies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.infra import JOB_TAG, Request, decide, policy_vars, render_policy

ACCOUNT = "123456789012"
BUCKET = "arn:aws:s3:::sf-data"
DATA = f"{BUCKET}/shardflow"
TABLE = f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/sf-state"
QUEUES = f"arn:aws:sqs:eu-west-1:{ACCOUNT}"
COORDINATOR = f"arn:aws:iam::{ACCOUNT}:role/shardflow/sf-coordinator"
WORKER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/shardflow/sf-worker"
KMS_KEY = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TLS = {"aws:SecureTransport": "true"}


def _policy(role: str) -> dict[str, Any]:
    return render_policy(role, policy_vars())


def _worker(job: str | None = "job-a", **context: Any) -> Callable[[str, str], str]:
    """Decide calls of a worker session tagged shardflow-job=job (untagged when None)."""
    policy = _policy("worker")
    tags = {JOB_TAG: job} if job is not None else {}

    def call(action: str, resource: str) -> str:
        return decide(Request(action, resource, context={**TLS, **tags, **context}), policy)

    return call


# --- worker: one job only ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "resource", "expected"),
    [
        ("s3:PutObject", f"{DATA}/jobs/job-a/results/t1/0001.parquet", "Allow"),
        ("s3:PutObject", f"{DATA}/jobs/job-a/results/t1.done", "Allow"),
        ("s3:PutObject", f"{DATA}/jobs/job-a/results/ab/t1/0001.parquet", "Allow"),
        ("s3:PutObject", f"{DATA}/jobs/job-a/logs/t1/0001.log", "Allow"),
        ("s3:AbortMultipartUpload", f"{DATA}/jobs/job-a/results/t1/0001.parquet", "Allow"),
        ("s3:GetObject", f"{DATA}/jobs/job-a/batches/b1.jsonl", "Allow"),
        ("s3:GetObject", f"{DATA}/inputs/users.jsonl.gz", "Allow"),
        ("s3:PutObject", f"{DATA}/jobs/job-b/results/t1/0001.parquet", "ImplicitDeny"),
        ("s3:PutObject", f"{DATA}/jobs/job-a/output/final.parquet", "ImplicitDeny"),
        ("s3:PutObject", f"{DATA}/jobs/job-a/job.json", "ImplicitDeny"),
        ("s3:PutObject", f"{DATA}/jobs/job-ab/results/t1/0001.parquet", "ImplicitDeny"),
        ("s3:PutObject", f"{DATA}/inputs/users.jsonl.gz", "ImplicitDeny"),
        ("s3:GetObject", f"{DATA}/jobs/job-b/batches/b1.jsonl", "ImplicitDeny"),
        ("s3:DeleteObject", f"{DATA}/jobs/job-a/results/t1/0001.parquet", "Deny"),
        ("s3:DeleteObjectVersion", f"{DATA}/jobs/job-a/results/t1/0001.parquet", "Deny"),
        ("s3:PutBucketPolicy", BUCKET, "ImplicitDeny"),
        ("sqs:ReceiveMessage", f"{QUEUES}:sf-job-job-a", "Allow"),
        ("sqs:ChangeMessageVisibility", f"{QUEUES}:sf-job-job-a", "Allow"),
        ("sqs:SendMessage", f"{QUEUES}:sf-job-job-a", "Allow"),
        ("sqs:ReceiveMessage", f"{QUEUES}:sf-job-job-b", "ImplicitDeny"),
        ("sqs:ReceiveMessage", f"{QUEUES}:sf-job-job-a-DLQ", "ImplicitDeny"),
        ("sqs:GetQueueUrl", f"{QUEUES}:sf-job-job-a-DLQ", "Allow"),
        ("sqs:GetQueueUrl", f"{QUEUES}:sf-job-job-b-DLQ", "ImplicitDeny"),
        ("sqs:CreateQueue", f"{QUEUES}:sf-job-job-c", "ImplicitDeny"),
        ("sqs:DeleteQueue", f"{QUEUES}:sf-job-job-a", "ImplicitDeny"),
        ("sqs:SendMessage", f"{QUEUES}:sf-control", "ImplicitDeny"),
        ("sts:AssumeRole", WORKER_ROLE, "ImplicitDeny"),
        ("sts:TagSession", WORKER_ROLE, "ImplicitDeny"),
    ],
)
def test_worker_objects_and_queue_are_its_job_only(
    action: str, resource: str, expected: str
) -> None:
    assert _worker("job-a")(action, resource) == expected


@pytest.mark.parametrize(
    ("action", "leading_keys", "expected"),
    [
        ("dynamodb:GetItem", ["JOB#job-a"], "Allow"),
        ("dynamodb:UpdateItem", ["JOB#job-a"], "Allow"),
        ("dynamodb:PutItem", ["JOB#job-a"], "Allow"),
        ("dynamodb:Query", ["JOB#job-a"], "Allow"),
        ("dynamodb:UpdateItem", ["BUCKET#job-a/geo_api"], "Allow"),
        ("dynamodb:BatchGetItem", ["JOB#job-a", "BUCKET#job-a/geo_api"], "Allow"),
        ("dynamodb:GetItem", ["JOB#job-b"], "ImplicitDeny"),
        ("dynamodb:GetItem", ["JOB#job-ab"], "ImplicitDeny"),
        ("dynamodb:BatchGetItem", ["JOB#job-a", "JOB#job-b"], "ImplicitDeny"),
        ("dynamodb:UpdateItem", ["BUCKET#job-b/geo_api"], "ImplicitDeny"),
        ("dynamodb:UpdateItem", ["BUCKET#job-ab/geo_api"], "ImplicitDeny"),
        ("dynamodb:DeleteItem", ["JOB#job-a"], "ImplicitDeny"),
        ("dynamodb:BatchWriteItem", ["JOB#job-a"], "ImplicitDeny"),
        ("dynamodb:Scan", None, "ImplicitDeny"),
        ("dynamodb:GetItem", None, "ImplicitDeny"),
    ],
)
def test_worker_state_items_are_its_job_only(
    action: str, leading_keys: list[str] | None, expected: str
) -> None:
    context = {} if leading_keys is None else {"dynamodb:LeadingKeys": leading_keys}
    assert _worker("job-a", **context)(action, TABLE) == expected


def test_worker_cannot_query_the_table_indexes_that_span_jobs() -> None:
    context = {"dynamodb:LeadingKeys": ["JOB#job-a"]}
    assert _worker("job-a", **context)("dynamodb:Query", f"{TABLE}/index/GSI2") == "ImplicitDeny"


def test_worker_lists_only_its_job_prefix() -> None:
    def listing(prefix: str | None) -> str:
        context = {} if prefix is None else {"s3:prefix": prefix}
        return _worker("job-a", **context)("s3:ListBucket", BUCKET)

    assert listing("shardflow/jobs/job-a/results/") == "Allow"
    # S3 decides 404 versus 403 for a missing key by this check with s3:prefix set to
    # the key: a missing marker of its own job must read as missing, not as refused
    assert listing("shardflow/jobs/job-a/results/t1.done") == "Allow"
    assert listing("shardflow/jobs/job-b/") == "ImplicitDeny"
    assert listing("shardflow/jobs/") == "ImplicitDeny"
    assert listing(None) == "ImplicitDeny"


def test_worker_session_without_job_tag_can_touch_no_job() -> None:
    untagged = _worker(None, **{"dynamodb:LeadingKeys": ["JOB#job-a"]})
    assert untagged("s3:GetObject", f"{DATA}/jobs/job-a/batches/b1.jsonl") == "ImplicitDeny"
    assert untagged("s3:PutObject", f"{DATA}/jobs/job-a/results/t1/0001.parquet") == "ImplicitDeny"
    assert untagged("dynamodb:GetItem", TABLE) == "ImplicitDeny"
    assert untagged("sqs:ReceiveMessage", f"{QUEUES}:sf-job-job-a") == "ImplicitDeny"


def test_worker_uses_kms_only_through_the_services() -> None:
    policy = render_policy("worker", policy_vars(kms_key_arns=[KMS_KEY]))

    def kms(via: str | None) -> str:
        context = {JOB_TAG: "job-a", **({"kms:ViaService": via} if via else {})}
        return decide(Request("kms:Decrypt", KMS_KEY, context=context), policy)

    assert kms("s3.eu-west-1.amazonaws.com") == "Allow"
    assert kms(None) == "ImplicitDeny"  # a direct kms:Decrypt call
    assert kms("s3.us-east-1.amazonaws.com") == "ImplicitDeny"


# --- worker trust: only the coordinator mints job-scoped sessions -------------------------


def _assume_worker(principal: str, tags: dict[str, str]) -> str:
    trust = render_policy("worker-trust", {"principal_arns": [COORDINATOR]})
    context: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        context["aws:TagKeys"] = list(tags)
    verdicts = {
        decide(Request(action, WORKER_ROLE, principal, context), trust)
        for action in ("sts:AssumeRole", "sts:TagSession")
    }
    return verdicts.pop() if len(verdicts) == 1 else "Deny"


def test_worker_trust_requires_one_plain_job_tag_from_the_coordinator() -> None:
    assert _assume_worker(COORDINATOR, {"shardflow-job": "job-a"}) == "Allow"
    assert _assume_worker(COORDINATOR, {}) == "ImplicitDeny"
    assert _assume_worker(COORDINATOR, {"shardflow-job": ""}) == "ImplicitDeny"
    assert _assume_worker(COORDINATOR, {"shardflow-job": "job-a", "team": "x"}) == "ImplicitDeny"
    assert _assume_worker(f"arn:aws:iam::{ACCOUNT}:role/other", {"shardflow-job": "job-a"}) == (
        "ImplicitDeny"
    )
    # STS refuses '*' and '?' in tag values itself; '/' is allowed there and refused here
    for sneaky in ("job-a/../job-b", "job-a/x", "/"):
        assert _assume_worker(COORDINATOR, {"shardflow-job": sneaky}) == "Deny", sneaky


def test_coordinator_may_mint_worker_sessions_only_with_the_job_tag() -> None:
    policy = _policy("coordinator")

    def assume(tags: dict[str, str]) -> str:
        context: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
        context["aws:TagKeys"] = list(tags)
        return decide(Request("sts:TagSession", WORKER_ROLE, COORDINATOR, context), policy)

    assert assume({"shardflow-job": "job-a"}) == "Allow"
    assert assume({}) == "ImplicitDeny"
    assert assume({"shardflow-job": "job-a", "env": "x"}) == "ImplicitDeny"


# --- coordinator, cli, dashboard ------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "action", "resource", "expected"),
    [
        ("coordinator", "sqs:CreateQueue", f"{QUEUES}:sf-job-job-a", "Allow"),
        ("coordinator", "sqs:CreateQueue", f"{QUEUES}:sf-job-job-a-DLQ", "Allow"),
        ("coordinator", "sqs:CreateQueue", f"{QUEUES}:other-queue", "ImplicitDeny"),
        ("coordinator", "sqs:DeleteQueue", f"{QUEUES}:sf-control", "ImplicitDeny"),
        ("coordinator", "sqs:SendMessage", f"{QUEUES}:sf-control", "Allow"),
        ("coordinator", "s3:PutObject", f"{DATA}/jobs/job-a/output/_SUCCESS", "Allow"),
        ("coordinator", "s3:DeleteObject", f"{DATA}/jobs/job-a/results/t1/0002.parquet", "Allow"),
        ("coordinator", "s3:PutObject", f"{DATA}/inputs/users.jsonl", "ImplicitDeny"),
        ("coordinator", "s3:PutObject", f"{BUCKET}/elsewhere/x", "ImplicitDeny"),
        ("coordinator", "dynamodb:Query", f"{TABLE}/index/GSI1", "Allow"),
        ("coordinator", "dynamodb:DeleteTable", TABLE, "ImplicitDeny"),
        ("coordinator", "dynamodb:Scan", TABLE, "ImplicitDeny"),
        ("coordinator", "iam:PassRole", WORKER_ROLE, "ImplicitDeny"),
        ("cli", "s3:GetObject", f"{DATA}/jobs/job-a/output/final.parquet", "Allow"),
        ("cli", "s3:DeleteObject", f"{DATA}/jobs/job-a/results/t1/0001.parquet", "Allow"),
        ("cli", "s3:DeleteObject", f"{DATA}/inputs/users.jsonl", "ImplicitDeny"),
        ("cli", "s3:PutObject", f"{DATA}/jobs/job-a/output/final.parquet", "ImplicitDeny"),
        ("cli", "dynamodb:UpdateItem", TABLE, "Allow"),
        ("cli", "dynamodb:DeleteItem", TABLE, "Allow"),
        ("cli", "dynamodb:DeleteTable", TABLE, "ImplicitDeny"),
        ("cli", "sqs:PurgeQueue", f"{QUEUES}:sf-job-job-a", "Allow"),
        ("cli", "sqs:CreateQueue", f"{QUEUES}:sf-job-job-a", "ImplicitDeny"),
        ("cli", "s3:GetEncryptionConfiguration", BUCKET, "Allow"),  # shardflow doctor
        ("cli", "s3:PutEncryptionConfiguration", BUCKET, "ImplicitDeny"),
        ("cli", "dynamodb:DescribeContinuousBackups", TABLE, "Allow"),
        ("cli", "dynamodb:UpdateContinuousBackups", TABLE, "ImplicitDeny"),
        ("dashboard", "s3:GetObject", f"{DATA}/jobs/job-a/output/final.parquet", "Allow"),
        ("dashboard", "s3:DeleteObject", f"{DATA}/jobs/job-a/output/final.parquet", "Deny"),
        ("dashboard", "s3:PutObject", f"{DATA}/jobs/job-a/output/final.parquet", "ImplicitDeny"),
        ("dashboard", "dynamodb:UpdateItem", TABLE, "Allow"),
        ("dashboard", "dynamodb:DeleteItem", TABLE, "Deny"),
        ("dashboard", "dynamodb:BatchWriteItem", TABLE, "Deny"),
        ("dashboard", "sqs:SendMessage", f"{QUEUES}:sf-job-job-a", "Allow"),
        ("dashboard", "sqs:PurgeQueue", f"{QUEUES}:sf-job-job-a", "Deny"),
        ("dashboard", "sqs:DeleteQueue", f"{QUEUES}:sf-job-job-a", "Deny"),
        ("dashboard", "sqs:ReceiveMessage", f"{QUEUES}:sf-control", "Allow"),
    ],
)
def test_role_permissions(role: str, action: str, resource: str, expected: str) -> None:
    context = {**TLS, "s3:prefix": "shardflow/jobs/"}
    assert decide(Request(action, resource, context=context), _policy(role)) == expected


@pytest.mark.parametrize("role", ["coordinator", "cli", "dashboard"])
def test_list_bucket_is_limited_to_the_data_prefix(role: str) -> None:
    policy = _policy(role)
    inside = Request("s3:ListBucket", BUCKET, context={"s3:prefix": "shardflow/jobs/job-a/"})
    outside = Request("s3:ListBucket", BUCKET, context={"s3:prefix": "other-team/"})
    assert decide(inside, policy) == "Allow"
    assert decide(outside, policy) == "ImplicitDeny"


AUDIT_ENTRY = f"{DATA}/audit/000000000007.json"


@pytest.mark.parametrize("role", ["coordinator", "cli", "dashboard"])
def test_audit_log_is_appended_and_read_but_never_deleted_or_tagged(role: str) -> None:
    policy = _policy(role)

    def call(action: str, resource: str = AUDIT_ENTRY, **context: Any) -> str:
        return decide(Request(action, resource, context={**TLS, **context}), policy)

    assert call("s3:PutObject") == "Allow"
    assert call("s3:GetObject") == "Allow"  # the previous entry's hash, to chain after it
    # the next entry is found by HEAD requests, and a missing one must read as 404: S3
    # decides that by ListBucket with s3:prefix set to the key
    assert call("s3:ListBucket", BUCKET, **{"s3:prefix": "shardflow/audit/000000000008.json"}) == (
        "Allow"
    )
    assert call("s3:ListBucket", BUCKET, **{"s3:prefix": "shardflow/audit/"}) == "Allow"
    # create-only: no delete, and no tag (the lifecycle rule expires objects tagged temp)
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectTagging"):
        assert call(action) != "Allow", action
    assert call("s3:PutObject", f"{BUCKET}/audit/000000000007.json") == "ImplicitDeny"


def test_worker_can_neither_write_nor_read_the_audit_log() -> None:
    call = _worker("job-a")
    assert call("s3:PutObject", AUDIT_ENTRY) == "Deny"
    assert call("s3:DeleteObject", AUDIT_ENTRY) == "Deny"
    assert call("s3:DeleteObjectVersion", AUDIT_ENTRY) == "Deny"
    assert call("s3:PutObjectTagging", AUDIT_ENTRY) == "ImplicitDeny"
    assert call("s3:GetObject", AUDIT_ENTRY) == "ImplicitDeny"
    assert _worker(None)("s3:PutObject", AUDIT_ENTRY) == "Deny"
    listing = _worker("job-a", **{"s3:prefix": "shardflow/audit/"})
    assert listing("s3:ListBucket", BUCKET) == "ImplicitDeny"


def test_input_buckets_are_read_only() -> None:
    extra = "arn:aws:s3:::acme-raw"
    for role in ("coordinator", "worker"):
        policy = render_policy(
            role, policy_vars(input_bucket_arns=[extra], input_object_arns=[f"{extra}/*"])
        )
        context = {JOB_TAG: "job-a"}
        assert decide(Request("s3:GetObject", f"{extra}/day1.csv", context=context), policy) == (
            "Allow"
        )
        assert decide(Request("s3:PutObject", f"{extra}/day1.csv", context=context), policy) != (
            "Allow"
        )


# --- bucket policy: TLS only, no other encryption ---------------------------------------------


def _bucket_policy(kms: bool) -> dict[str, Any]:
    return render_policy(
        "bucket",
        {
            "bucket_arn": BUCKET,
            "sse_algorithm": "aws:kms" if kms else "AES256",
            "kms_key_arn": KMS_KEY if kms else "",
            "kms_object_arns": [f"{BUCKET}/*"] if kms else [],
        },
    )


def _put(kms: bool, **context: Any) -> str:
    request = Request("s3:PutObject", f"{DATA}/jobs/job-a/job.json", context={**TLS, **context})
    return decide(request, _bucket_policy(kms))


def test_bucket_policy_refuses_plain_http_and_old_tls() -> None:
    policy = _bucket_policy(kms=False)
    plain = Request("s3:GetObject", f"{DATA}/x", context={"aws:SecureTransport": "false"})
    old_tls = Request("s3:ListBucket", BUCKET, context={**TLS, "s3:TlsVersion": 1.1})
    good = Request("s3:GetObject", f"{DATA}/x", context={**TLS, "s3:TlsVersion": 1.3})
    assert decide(plain, policy) == "Deny"
    assert decide(old_tls, policy) == "Deny"
    assert decide(good, policy) == "ImplicitDeny"  # not denied: identity policies decide


def test_bucket_policy_refuses_puts_that_ask_for_other_encryption() -> None:
    sse = "s3:x-amz-server-side-encryption"
    key_id = "s3:x-amz-server-side-encryption-aws-kms-key-id"
    sse_c = "s3:x-amz-server-side-encryption-customer-algorithm"
    assert _put(kms=False, **{sse: "AES256"}) != "Deny"
    assert _put(kms=False, **{sse: "aws:kms"}) == "Deny"
    assert _put(kms=False, **{sse_c: "AES256"}) == "Deny"
    # no header: the bucket's default encryption applies (multipart parts carry none)
    assert _put(kms=False) != "Deny"
    assert _put(kms=True, **{sse: "aws:kms", key_id: KMS_KEY}) != "Deny"
    assert _put(kms=True, **{sse: "aws:kms"}) != "Deny"
    assert _put(kms=True, **{sse: "AES256"}) == "Deny"
    assert _put(kms=True, **{sse: "aws:kms", key_id: KMS_KEY.replace("1234abcd", "ffffffff")}) == (
        "Deny"
    )


def test_control_queue_policy_refuses_plain_http() -> None:
    queue = f"{QUEUES}:sf-control"
    policy = render_policy("queue", {"queue_arn": queue})
    assert (
        decide(Request("sqs:SendMessage", queue, context={"aws:SecureTransport": "false"}), policy)
        == "Deny"
    )
    assert decide(Request("sqs:SendMessage", queue, context=TLS), policy) == "ImplicitDeny"


def test_the_evaluator_is_not_vacuous() -> None:
    """Without its LeadingKeys condition the worker policy would reach other jobs."""
    policy = _policy("worker")
    for statement in policy["Statement"]:
        statement.pop("Condition", None)
    other = Request("dynamodb:GetItem", TABLE, context={JOB_TAG: "job-a"})
    assert decide(other, policy) == "Allow"
