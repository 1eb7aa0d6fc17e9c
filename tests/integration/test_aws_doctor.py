"""``shardflow doctor`` against an in-process moto server: it passes on resources made
as docs/aws.md says, names exactly what is missing otherwise, and --create fixes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardflow.aws import AwsSettings, dynamodb_client, s3_client
from shardflow.cli.doctor import doctor
from shardflow.doctor import CheckResult, run_checks
from shardflow.statestore.dynamodb_schema import table_spec

pytest_plugins = ["tests.plugins.moto"]
pytestmark = pytest.mark.aws


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_well_made_resources_pass(
    s3_bucket: str, dynamodb_table: str, sqs_prefix: str, moto_server: str
) -> None:
    results = run_checks(
        f"s3://{s3_bucket}/shardflow",
        f"dynamodb://{dynamodb_table}",
        f"sqs://{sqs_prefix}",
        endpoint_url=moto_server,
        region="us-east-1",
    )
    assert [r.name for r in results] == [
        "s3 bucket",
        "s3 encryption",
        "s3 public access block",
        "dynamodb table",
        "sqs",
    ]
    assert all(r.ok for r in results), results


def test_bucket_without_encryption_or_public_access_block_is_reported(
    aws_settings: AwsSettings, moto_server: str
) -> None:
    client = s3_client(aws_settings)
    client.create_bucket(Bucket="sf-bare-bucket")
    client.put_public_access_block(
        Bucket="sf-bare-bucket",
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": True,
        },
    )
    checks = by_name(run_checks("s3://sf-bare-bucket", None, None, endpoint_url=moto_server))
    assert checks["s3 bucket"].ok
    assert not checks["s3 encryption"].ok
    assert "put-bucket-encryption --bucket sf-bare-bucket" in str(checks["s3 encryption"].fix)
    assert not checks["s3 public access block"].ok
    assert checks["s3 public access block"].detail == "off: BlockPublicPolicy"
    assert "put-public-access-block --bucket sf-bare-bucket" in str(
        checks["s3 public access block"].fix
    )
    client.delete_public_access_block(Bucket="sf-bare-bucket")
    checks = by_name(run_checks("s3://sf-bare-bucket", None, None, endpoint_url=moto_server))
    assert checks["s3 public access block"].detail == "no public-access block"
    client.close()


def test_table_without_the_indexes_is_reported(aws_settings: AwsSettings, moto_server: str) -> None:
    spec = table_spec("sf-old-table")
    spec["GlobalSecondaryIndexes"] = spec["GlobalSecondaryIndexes"][:1]
    spec["AttributeDefinitions"] = spec["AttributeDefinitions"][:4]
    del spec["SSESpecification"]
    client = dynamodb_client(aws_settings)
    client.create_table(**spec)
    (check,) = run_checks(None, "dynamodb://sf-old-table", None, endpoint_url=moto_server)
    assert not check.ok
    assert "index GSI2 (GSI2PK, GSI2SK) is missing" in check.detail
    assert "encryption" in check.detail
    client.delete_table(TableName="sf-old-table")
    client.close()


def test_missing_resources_are_named_and_create_makes_them(moto_server: str) -> None:
    urls = ("s3://sf-new-bucket/p", "dynamodb://sf-new-table", None)
    missing = run_checks(*urls, endpoint_url=moto_server, region="us-east-1")
    assert [(r.name, r.ok) for r in missing] == [("s3 bucket", False), ("dynamodb table", False)]
    assert "aws s3api create-bucket --bucket sf-new-bucket" in str(missing[0].fix)
    assert "aws dynamodb create-table --table-name sf-new-table" in str(missing[1].fix)
    created = run_checks(*urls, endpoint_url=moto_server, region="us-east-1", create=True)
    assert all(r.ok for r in created), created
    assert all(r.ok for r in run_checks(*urls, endpoint_url=moto_server, region="us-east-1"))


def test_cli_exit_codes_and_json(s3_bucket: str, moto_server: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"SHARDFLOW_ENDPOINT_URL": moto_server, "SHARDFLOW_REGION": "us-east-1"}
    good = runner.invoke(doctor, ["--storage", f"s3://{s3_bucket}/x", "--json"], env=env)
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["ok"] is True
    bad = runner.invoke(doctor, ["--storage", "s3://sf-no-such-bucket"], env=env)
    assert bad.exit_code == 1
    assert "FAIL  s3 bucket: bucket sf-no-such-bucket does not exist" in bad.output
    assert "fix: aws s3api create-bucket" in bad.output
    assert runner.invoke(doctor, [], env=env).exit_code == 2
    assert runner.invoke(doctor, ["--state", "dynamodb://x?colour=red"], env=env).exit_code == 2
    local = runner.invoke(doctor, ["--state", str(tmp_path / "state.db")], env=env)
    assert local.exit_code == 0
    assert "nothing to check" in local.output
