"""pytest fixtures for the AWS adapters: an in-process moto server and fresh resources.

Load with ``pytest_plugins = ["tests.plugins.moto"]`` (tests/conftest.py, or a test
module). moto is a pinned test dependency (``moto[server]==5.2.5``), so these fixtures
never skip.

- ``moto_server`` (session): a ``ThreadedMotoServer`` on 127.0.0.1 and a free port; yields
  its endpoint URL. For the session it sets fake credentials and a region in the
  environment (the standard provider chain is the only way our adapters get
  credentials, and spawned child processes inherit the environment), points the shared
  AWS config files at nothing and turns off the instance-metadata lookup, so a
  developer's real ``~/.aws`` is never read; the previous environment is restored at
  the end.
- ``moto_process_server``: a moto server of its own, in a spawned process (same
  serialised handlers), for load scenarios whose throughput would otherwise be set by
  the test process's interpreter, which the session server shares with every other
  thread of the suite.
- ``moto_reset``: POSTs ``/moto-api/reset``, dropping every bucket, table and queue.
- ``aws_settings``: :class:`~shardflow.aws.AwsSettings` for the server.
- ``s3_bucket``, ``dynamodb_table``, ``sqs_prefix``: a name unique to the test, for a
  bucket (created with default encryption and the public-access block on), a table
  (created with :func:`create_table_if_missing`) and a queue prefix; each is removed
  after the test, since moto keeps everything in memory.

Atomicity: moto's DynamoDB and S3 backends take no locks. A conditional write is a
check-then-act in the request's server thread, and TransactWriteItems deep-copies the
table while other threads change it (which fails with "dictionary changed size during
iteration" as a 500). AWS applies each conditional write and transaction atomically,
so the session fixture serialises moto's DynamoDB and S3 request handlers behind one
lock: concurrent tests then test our fencing, not moto's races. SQS stays concurrent
(a long poll holds its request open) and is at-least-once anyway, as on AWS.

Warnings: pytest turns warnings into errors, and warnings filters are process-wide,
so a warning raised inside the server thread would become a 500 response. moto 5.2.5
and botocore 1.44 raise none on the calls our adapters make, so nothing is silenced
here; werkzeug's per-request access log (INFO) is lowered to WARNING for the session
to keep test output readable.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shardflow.aws import AwsSettings

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
# variables that would point the provider chain or endpoints somewhere real
CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
REGION = "us-east-1"


def _serialise_handlers(mp: pytest.MonkeyPatch) -> None:
    """Run moto's DynamoDB and S3 request handlers one at a time (see the module notes)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.s3.responses import S3Response

    lock = threading.RLock()  # ambiguous_response calls bucket_response

    def locked(handler: Any) -> Any:
        @functools.wraps(handler)
        def serialised(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return handler(*args, **kwargs)

        return serialised

    mp.setattr(DynamoHandler, "_dispatch", locked(DynamoHandler._dispatch))
    for name in ("ambiguous_response", "bucket_response", "key_response"):
        mp.setattr(S3Response, name, locked(getattr(S3Response, name)))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL (``http://127.0.0.1:PORT``) of a moto server in this process."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name in CLEARED_ENV:
            mp.delenv(name, raising=False)
        for name, value in FAKE_ENV.items():
            mp.setenv(name, value)
        _serialise_handlers(mp)
        access_log = logging.getLogger("werkzeug")
        level = access_log.level
        access_log.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            access_log.setLevel(level)


def _serve_in_process(ready: Any, stop: Any) -> None:
    """A spawned process's body: a serialised moto server until ``stop`` is set."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        _serialise_handlers(mp)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            ready.put(server.get_host_and_port())
            stop.wait()
        finally:
            server.stop()


@pytest.fixture
def moto_process_server(moto_server: str) -> Iterator[str]:
    """The endpoint URL of a moto server in a process of its own (fake credentials as
    for ``moto_server``, which sets them in the environment the process inherits)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Queue(), spawn.Event()
    process = spawn.Process(target=_serve_in_process, args=(ready, stop), daemon=True)
    process.start()
    try:
        host, port = ready.get(timeout=60)
        yield f"http://{host}:{port}"
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()


@pytest.fixture
def moto_reset(moto_server: str) -> None:
    """Drop everything the server holds (buckets, tables, queues)."""
    url = f"{moto_server}/moto-api/reset"  # always http://127.0.0.1:PORT
    request = urllib.request.Request(url, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200


@pytest.fixture
def aws_settings(moto_server: str) -> AwsSettings:
    from shardflow.aws import AwsSettings

    return AwsSettings(region=REGION, endpoint_url=moto_server)


def unique_name(kind: str) -> str:
    return f"sf-{kind}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def s3_bucket(moto_server: str, aws_settings: AwsSettings) -> Iterator[str]:
    """A new bucket with default encryption (SSE-S3) and all public access blocked;
    emptied and deleted after the test (moto holds objects in memory)."""
    from shardflow.aws import s3_client

    name = unique_name("bkt")
    client = s3_client(aws_settings)
    client.create_bucket(Bucket=name)
    client.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    client.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    yield name
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [o["Key"] for o in page.get("Contents", [])]
        if keys:
            objects: Any = [{"Key": key} for key in keys]
            client.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
    client.delete_bucket(Bucket=name)
    client.close()


@pytest.fixture
def dynamodb_table(moto_server: str, aws_settings: AwsSettings) -> Iterator[str]:
    """A new shardflow table (keys, indexes and SSE as in docs/aws.md); deleted after."""
    from shardflow.aws import dynamodb_client
    from shardflow.statestore.dynamodb_schema import create_table_if_missing

    name = unique_name("tbl")
    client = dynamodb_client(aws_settings)
    create_table_if_missing(client, name)
    yield name
    # the table's items live in the server's memory until it is deleted
    client.delete_table(TableName=name)
    client.close()


@pytest.fixture
def sqs_prefix(moto_server: str, aws_settings: AwsSettings) -> Iterator[str]:
    """A queue-name prefix unique to the test (queues are ``{prefix}-{job}``); the
    queues made under it are deleted after the test."""
    from shardflow.aws import sqs_client

    prefix = unique_name("q")
    yield prefix
    client = sqs_client(aws_settings)
    for url in client.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        client.delete_queue(QueueUrl=url)
    client.close()
