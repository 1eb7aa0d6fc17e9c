"""A job on S3, DynamoDB and SQS (moto) through a fault proxy: 503 SlowDown bursts,
connection resets (before the request reaches the server, and after it was applied),
and DynamoDB throttling. The job must finish with I1-I6 as if nothing happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from shardflow.backends import AwsOptions
from shardflow.testing.invariants import JobOutput
from tests.faults.helpers import FaultJob, assert_same_output
from tests.faults.proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.aws
JobFactory = Callable[..., FaultJob]
# botocore retries each call up to this many times (standard mode, with backoff)
ATTEMPTS = "max_attempts=10"


@pytest.fixture
def proxy_factory(moto_server: str) -> Iterator[Callable[[FaultPlan], FaultProxy]]:
    started: list[FaultProxy] = []

    def start(plan: FaultPlan) -> FaultProxy:
        proxy = FaultProxy(moto_server, plan)
        proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def aws_job(
    fault_job: JobFactory,
    moto_server: str,
    endpoint: str,
    bucket: str,
    table: str,
    queues: str,
) -> FaultJob:
    job = fault_job(
        config={
            "backends": {
                "storage": f"s3://{bucket}/sf?{ATTEMPTS}",
                "state": f"dynamodb://{table}?region=us-east-1&{ATTEMPTS}",
                "queue": f"sqs://{queues}?{ATTEMPTS}",
                "endpoint_url": endpoint,
                "region": "us-east-1",
            },
        }
    )
    job.read_aws = AwsOptions(endpoint_url=moto_server, region="us-east-1")
    return job


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(
            FaultPlan(s3_slowdown_every=30, s3_burst=2, s3_reset_every=37, sqs_reset_every=29),
            id="s3-slowdown-and-resets",
        ),
        pytest.param(
            FaultPlan(dynamodb_throttle_every=11, dynamodb_reset_every=37),
            id="dynamodb-throttling",
        ),
    ],
)
def test_job_through_aws_faults_keeps_every_invariant(
    fault_job: JobFactory,
    clean: JobOutput,
    proxy_factory: Callable[[FaultPlan], FaultProxy],
    moto_server: str,
    s3_bucket: str,
    dynamodb_table: str,
    sqs_prefix: str,
    plan: FaultPlan,
) -> None:
    proxy = proxy_factory(plan)
    job = aws_job(fault_job, moto_server, proxy.url, s3_bucket, dynamodb_table, sqs_prefix)
    summary = job.run(timeout=180)

    assert summary["status"] == "SUCCEEDED", job.tail()
    assert_same_output(job.check(), clean)
    injected = proxy.injected
    print(f"faults injected: {dict(injected)} over {dict(proxy.seen)} requests")
    assert sum(injected.values()) >= 10
    if plan.s3_slowdown_every:
        assert injected["s3_slowdown"] >= 8
        assert injected["s3_reset_before"] >= 1
        assert injected["s3_reset_after"] >= 1
    if plan.dynamodb_throttle_every:
        assert injected["dynamodb_throttle"] >= 10
