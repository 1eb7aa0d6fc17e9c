"""s3:// inputs on an in-process moto server: ranged reads, streams, globs, and an input
replaced after the split."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shardflow.aws import AwsSettings, s3_client
from shardflow.errors import InputError
from shardflow.split import sources
from shardflow.split.s3source import register_s3_source
from shardflow.split.sources import RangeReader, expand_inputs, open_source

pytest_plugins = ["tests.plugins.moto"]
pytestmark = pytest.mark.aws

LINES = b"".join(b'{"id": %d}\n' % i for i in range(1000))


@pytest.fixture
def bucket(
    s3_bucket: str, aws_settings: AwsSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    # the scheme registry is process-wide: give this test its own copy
    monkeypatch.setattr(sources, "_SCHEMES", dict(sources._SCHEMES))
    register_s3_source(aws_settings)
    client = s3_client(aws_settings)
    for name in ["in/a.jsonl", "in/b.jsonl", "in/sub/c.jsonl", "other/d.jsonl"]:
        client.put_object(Bucket=s3_bucket, Key=name, Body=LINES)
    yield s3_bucket, client
    client.close()


def test_ranged_reads_and_stream_match_the_object(bucket: tuple[str, Any]) -> None:
    name, _ = bucket
    source = open_source(f"s3://{name}/in/a.jsonl")
    assert (source.url, source.size) == (f"s3://{name}/in/a.jsonl", len(LINES))
    assert source.mtime > 0
    assert source.read_range(10, 30) == LINES[10:30]
    assert source.read_range(len(LINES) - 5, len(LINES) + 100) == LINES[-5:]
    assert source.read_range(len(LINES), len(LINES) + 1) == b""
    with source.open() as stream:
        assert stream.read() == LINES
    reader = RangeReader(source)
    reader.seek(-11, 2)
    assert reader.read() == LINES[-11:]


def test_globs_expand_in_key_order(bucket: tuple[str, Any]) -> None:
    name, _ = bucket
    urls = [s.url for s in expand_inputs([f"s3://{name}/in/*.jsonl"])]
    assert urls == [f"s3://{name}/in/{k}" for k in ["a.jsonl", "b.jsonl", "sub/c.jsonl"]]
    with pytest.raises(InputError, match="no input matches"):
        expand_inputs([f"s3://{name}/none/*.csv"])


def test_missing_and_replaced_inputs_fail_loudly(bucket: tuple[str, Any]) -> None:
    name, client = bucket
    with pytest.raises(InputError, match="not found"):
        open_source(f"s3://{name}/in/missing.jsonl")
    source = open_source(f"s3://{name}/in/b.jsonl")
    client.put_object(Bucket=name, Key="in/b.jsonl", Body=b"replaced\n")
    with pytest.raises(InputError, match="changed since the job was split"):
        source.read_range(0, 10)
