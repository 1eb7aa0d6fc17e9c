"""The audit log on S3 (moto): create-only appends from racing processes chain without
gaps, and an entry changed behind the store's back is named by verify."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from shardflow.aws import AwsSettings, s3_client
from shardflow.objectstore.s3 import S3ObjectStore, open_s3_store
from shardflow.security.audit import entry_key, record, verify

pytestmark = pytest.mark.aws


def _append(url: str, writer: int, start: multiprocessing.synchronize.Event) -> None:
    store = open_s3_store(url)
    start.wait(60)
    for i in range(4):
        record(store, actor=f"writer-{writer}", action="job.pause", detail={"i": i})


def test_racing_writers_on_s3_make_one_chain(s3_bucket: str, aws_settings: AwsSettings) -> None:
    store = S3ObjectStore(s3_bucket, "audit-race", settings=aws_settings)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_append, args=(store.url, w, start)) for w in range(3)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    result = verify(store)
    assert (result.ok, result.entries) == (True, 12), result.reason


def test_an_entry_changed_on_s3_is_named(s3_bucket: str, aws_settings: AwsSettings) -> None:
    store = S3ObjectStore(s3_bucket, "audit-tamper", settings=aws_settings)
    for i in range(4):
        record(store, actor="cli:a@h", action="job.cancel", job_id=f"j{i}")
    body = json.loads(store.get_bytes(entry_key(2)))
    body["job_id"] = "someone-elses"
    client = s3_client(aws_settings)
    try:
        client.put_object(
            Bucket=s3_bucket, Key=f"audit-tamper/{entry_key(2)}", Body=json.dumps(body).encode()
        )
    finally:
        client.close()
    result = verify(store)
    assert (result.ok, result.first_bad_seq) == (False, 2)
