"""``shardflow doctor``: check that the AWS resources a config names exist and are safe.

Each check returns a :class:`CheckResult`: what was checked, whether it passed, what
was found and, when it failed, exactly what to do (an AWS CLI command; the Terraform
modules in infra/terraform create the same). Local backends (paths, sqlite://,
file://) need nothing and get one passing line each.

Checks: the bucket exists, has default encryption and all four public-access-block
flags on; the table exists with the keys, indexes and encryption of the documented
design (docs/aws.md); SQS answers and encrypts queues (a probe queue
``{prefix}-doctor`` and its DLQ are created if missing and kept: queues cost nothing at
rest). ``create=True`` creates a missing bucket (encrypted, public access blocked) and
a missing table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import (
    AwsSettings,
    dynamodb_client,
    error_code,
    parse_aws_url,
    s3_client,
    settings_from,
)
from shardflow.errors import ShardflowError
from shardflow.statestore.dynamodb_schema import create_table_if_missing, table_problems

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PAB_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_MISSING_BUCKET = frozenset({"404", "NoSuchBucket", "NotFound"})
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnrecognizedClientException"})
_ALSO = "(or apply infra/terraform, or run `shardflow doctor --create`)"

__all__ = ["CheckResult", "run_checks"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: ``fix`` says what to run when ``ok`` is False."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None


def _scheme(url: str | None) -> str:
    return urlsplit(url).scheme if url and "://" in url else ""


def _unreachable(name: str, exc: BaseException) -> CheckResult:
    if error_code(exc) in _DENIED:
        fix = "grant these credentials the IAM actions listed in docs/aws.md"
    else:
        fix = "check region, endpoint_url and credentials (the standard AWS provider chain)"
    return CheckResult(name, False, f"cannot check: {exc}", fix)


# -- S3 ------------------------------------------------------------------------------


def _create_bucket(client: S3Client, bucket: str, region: str) -> None:
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(
            Bucket=bucket,
            CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
        )
    client.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    client.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def _bucket_encryption(client: S3Client, bucket: str) -> CheckResult:
    fix = (
        f"aws s3api put-bucket-encryption --bucket {bucket} --server-side-encryption-"
        'configuration \'{"Rules":[{"ApplyServerSideEncryptionByDefault":'
        '{"SSEAlgorithm":"aws:kms"}}]}\''
    )
    try:
        rules = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    except ClientError as exc:
        if error_code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
            return CheckResult("s3 encryption", False, "no default encryption", fix)
        raise
    algorithms = [
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
        for r in rules.get("Rules", [])
    ]
    return CheckResult(
        "s3 encryption", True, f"default encryption {', '.join(map(str, algorithms))}"
    )


def _public_access_block(client: S3Client, bucket: str) -> CheckResult:
    flags = ",".join(f"{flag}=true" for flag in PAB_FLAGS)
    fix = (
        f"aws s3api put-public-access-block --bucket {bucket} "
        f"--public-access-block-configuration {flags}"
    )
    try:
        config = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
            return CheckResult("s3 public access block", False, "no public-access block", fix)
        raise
    off = [flag for flag in PAB_FLAGS if not config.get(flag)]
    if off:
        return CheckResult("s3 public access block", False, f"off: {', '.join(off)}", fix)
    return CheckResult("s3 public access block", True, "all four flags on")


def check_bucket(bucket: str, settings: AwsSettings, *, create: bool = False) -> list[CheckResult]:
    client = s3_client(settings)
    region = settings.region or client.meta.region_name or "us-east-1"
    results: list[CheckResult] = []
    try:
        try:
            client.head_bucket(Bucket=bucket)
            results.append(CheckResult("s3 bucket", True, f"bucket {bucket} exists"))
        except ClientError as exc:
            if error_code(exc) not in _MISSING_BUCKET:
                raise
            if not create:
                location = (
                    ""
                    if region == "us-east-1"
                    else f" --create-bucket-configuration LocationConstraint={region}"
                )
                fix = (
                    f"aws s3api create-bucket --bucket {bucket} --region {region}{location} {_ALSO}"
                )
                return [CheckResult("s3 bucket", False, f"bucket {bucket} does not exist", fix)]
            _create_bucket(client, bucket, region)
            results.append(CheckResult("s3 bucket", True, f"created bucket {bucket}"))
        results.append(_bucket_encryption(client, bucket))
        results.append(_public_access_block(client, bucket))
    except (ClientError, BotoCoreError) as exc:
        results.append(_unreachable("s3 bucket", exc))
    finally:
        client.close()
    return results


# -- DynamoDB ------------------------------------------------------------------------


def check_table(table: str, settings: AwsSettings, *, create: bool = False) -> list[CheckResult]:
    client = dynamodb_client(settings)
    try:
        if create and create_table_if_missing(client, table, kms_key_id=settings.kms_key_id):
            return [CheckResult("dynamodb table", True, f"created table {table}")]
        try:
            description = client.describe_table(TableName=table)["Table"]
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            fix = (
                f"aws dynamodb create-table --table-name {table} --billing-mode PAY_PER_REQUEST "
                "--sse-specification Enabled=true (keys and indexes in docs/aws.md) " + _ALSO
            )
            return [CheckResult("dynamodb table", False, f"table {table} does not exist", fix)]
        problems = table_problems(description)
        if problems:
            fix = (
                f"recreate {table} as docs/aws.md describes; for encryption alone: aws dynamodb "
                f"update-table --table-name {table} --sse-specification Enabled=true,SSEType=KMS"
            )
            return [CheckResult("dynamodb table", False, "; ".join(problems), fix)]
        return [
            CheckResult("dynamodb table", True, f"table {table}: keys, indexes and SSE as designed")
        ]
    except (ClientError, BotoCoreError, ShardflowError) as exc:
        return [_unreachable("dynamodb table", exc)]
    finally:
        client.close()


# -- SQS -----------------------------------------------------------------------------


def check_queue(prefix: str, settings: AwsSettings) -> list[CheckResult]:
    from shardflow.queue.sqs import SqsQueue, queue_name

    try:
        probe = SqsQueue(queue_name(prefix, "doctor"), settings=settings, max_receives=1)
    except (ClientError, BotoCoreError, ShardflowError) as exc:
        return [_unreachable("sqs", exc)]
    try:
        attributes = probe.client.get_queue_attributes(
            QueueUrl=probe.queue_url, AttributeNames=["SqsManagedSseEnabled", "KmsMasterKeyId"]
        ).get("Attributes", {})
    except (ClientError, BotoCoreError) as exc:
        return [_unreachable("sqs", exc)]
    finally:
        probe.close()
    if attributes.get("SqsManagedSseEnabled") != "true" and not attributes.get("KmsMasterKeyId"):
        fix = (
            f"aws sqs set-queue-attributes --queue-url {probe.queue_url} "
            "--attributes SqsManagedSseEnabled=true"
        )
        return [CheckResult("sqs", False, f"queue {probe.name} is not encrypted", fix)]
    return [CheckResult("sqs", True, f"queues {prefix}-* can be created, encrypted")]


def run_checks(
    storage_url: str | None,
    state_url: str | None,
    queue_url: str | None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    kms_key_id: str | None = None,
    create: bool = False,
) -> list[CheckResult]:
    """Check every configured backend (``create``: make a missing bucket or table);
    ConfigError for a malformed AWS URL."""
    results: list[CheckResult] = []
    if _scheme(storage_url) == "s3":
        assert storage_url is not None
        parsed = parse_aws_url(storage_url, "s3")
        settings = settings_from(
            parsed.options, endpoint_url=endpoint_url, region=region, kms_key_id=kms_key_id
        )
        results += check_bucket(parsed.location, settings, create=create)
    elif storage_url:
        results.append(CheckResult("storage", True, f"local store {storage_url}: nothing to check"))
    if _scheme(state_url) == "dynamodb":
        assert state_url is not None
        parsed = parse_aws_url(state_url, "dynamodb")
        settings = settings_from(
            parsed.options, endpoint_url=endpoint_url, region=region, kms_key_id=kms_key_id
        )
        results += check_table(parsed.location, settings, create=create)
    elif state_url:
        results.append(CheckResult("state", True, f"local state {state_url}: nothing to check"))
    if _scheme(queue_url) == "sqs":
        assert queue_url is not None
        parsed = parse_aws_url(queue_url, "sqs")
        settings = settings_from(
            parsed.options, endpoint_url=endpoint_url, region=region, kms_key_id=kms_key_id
        )
        results += check_queue(parsed.location, settings)
    elif queue_url:
        results.append(CheckResult("queue", True, f"local queue {queue_url}: nothing to check"))
    return results
