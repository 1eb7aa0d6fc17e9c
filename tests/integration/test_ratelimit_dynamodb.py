"""The rate-limiter scenarios of ``test_ratelimit_processes.py`` on the DynamoDB state
store, against the in-process moto server: 16 worker processes within rate + burst per
second and at 90% of the rate, a rate change mid-run, and killed or frozen holders whose
tokens come back when their lease period ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shardflow.aws import AwsSettings
from shardflow.statestore.dynamodb import DynamoDbStateStore
from tests.integration.test_ratelimit_processes import (
    Hits,
    Load,
    make_job,
    run_dead_and_frozen_holders,
    run_load_with_a_rate_change,
    serve_api,
)

pytest_plugins = ["tests.plugins.moto"]
pytestmark = pytest.mark.aws

# moto answers one request at a time, about 150 a second from 16 client processes on a
# 2-core machine: the scenario runs at half the SQLite one's rate to measure the limiter,
# not moto's queue
LOAD = Load(rate=100.0, burst=100, new_rate=50.0)


@pytest.fixture
def dynamodb_state(dynamodb_table: str, aws_settings: AwsSettings) -> Iterator[DynamoDbStateStore]:
    state = DynamoDbStateStore(dynamodb_table, settings=aws_settings)
    make_job(state, LOAD)
    yield state
    state.close()


@pytest.fixture
def api() -> Iterator[tuple[str, Hits]]:
    with serve_api() as served:
        yield served


def test_16_processes_stay_within_the_limit_and_follow_a_rate_change_on_dynamodb(
    dynamodb_state: DynamoDbStateStore, api: tuple[str, Hits]
) -> None:
    address, hits = api
    run_load_with_a_rate_change(dynamodb_state, dynamodb_state.url, address, hits, LOAD)


def test_killed_or_frozen_holders_lose_their_tokens_when_the_lease_ends_on_dynamodb(
    dynamodb_state: DynamoDbStateStore,
) -> None:
    run_dead_and_frozen_holders(dynamodb_state, dynamodb_state.url, LOAD.burst)
