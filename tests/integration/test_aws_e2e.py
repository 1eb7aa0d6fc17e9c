"""The quickstart job with storage on S3, state on DynamoDB and the queue on SQS (moto),
checked against the same invariants as the embedded run and against its rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardflow.aws import AwsSettings, s3_client
from shardflow.objectstore.local import LocalObjectStore
from shardflow.objectstore.s3 import S3ObjectStore
from shardflow.testing.invariants import check_invariants, read_job_output
from tests.e2e.helpers import REPO, run_json

pytestmark = pytest.mark.aws

QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"
DATA = REPO / "examples" / "quickstart" / "data" / "users.jsonl.gz"


def test_quickstart_on_aws_gives_the_embedded_rows(
    tmp_path: Path,
    moto_server: str,
    aws_settings: AwsSettings,
    s3_bucket: str,
    dynamodb_table: str,
    sqs_prefix: str,
) -> None:
    s3_client(aws_settings).upload_file(str(DATA), s3_bucket, "inputs/users.jsonl.gz")
    local_dir, aws_dir = tmp_path / "local", tmp_path / "aws"
    local_dir.mkdir()
    aws_dir.mkdir()
    embedded = run_json(["run", str(QUICKSTART), "--job-id", "qs"], local_dir, check=0)

    on_aws = run_json(
        [
            "run",
            str(QUICKSTART),
            "--job-id",
            "qs",
            "--set",
            f"input.path=s3://{s3_bucket}/inputs/users.jsonl.gz",
            "--set",
            f"backends.storage=s3://{s3_bucket}/shardflow",
            "--set",
            f"backends.state=dynamodb://{dynamodb_table}?region=us-east-1",
            "--set",
            f"backends.queue=sqs://{sqs_prefix}",
            "--set",
            f"backends.endpoint_url={moto_server}",
            "--set",
            "backends.region=us-east-1",
        ],
        aws_dir,
        check=0,
        timeout=300,
    )

    assert on_aws["status"] == "SUCCEEDED"
    assert on_aws["items"] == embedded["items"]
    assert on_aws["output_uri"] == f"s3://{s3_bucket}/shardflow/jobs/qs/output/results.parquet"
    remote = read_job_output(S3ObjectStore(s3_bucket, "shardflow", settings=aws_settings), "qs")
    local = read_job_output(LocalObjectStore(local_dir / ".shardflow" / "store"), "qs")
    check_invariants(remote, input_records=2002, expected_rejects=2)
    assert remote.results.equals(local.results)
    assert remote.failure_keys() == local.failure_keys()
    # nothing of the job's state or data was written locally but logs and scratch
    assert not (aws_dir / ".shardflow" / "state.db").exists()
    assert not (aws_dir / ".shardflow" / "store").exists()
    objects = s3_client(aws_settings).head_object(
        Bucket=s3_bucket, Key="shardflow/jobs/qs/output/results.parquet"
    )
    assert objects["ServerSideEncryption"] == "AES256"
