"""S3ObjectStore against an in-process moto server: what the embedded contract promises,
plus what is S3's own (multipart, SSE, checksums in metadata, retries, the sweeper)."""

from __future__ import annotations

import hashlib
import multiprocessing
import queue as stdlib_queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from shardflow.aws import AwsSettings, s3_client
from shardflow.errors import ChecksumMismatchError, ConfigError, NotFoundError, StoreError
from shardflow.objectstore.base import ObjectStore
from shardflow.objectstore.s3 import MiB, S3ObjectStore, open_s3_store

pytest_plugins = ["tests.plugins.moto"]
pytestmark = pytest.mark.aws

MARKER = "jobs/j1/results/t1.done"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(s3_bucket: str, aws_settings: AwsSettings) -> S3ObjectStore:
    return S3ObjectStore(s3_bucket, "pre/fix", settings=aws_settings)


@pytest.fixture
def raw(aws_settings: AwsSettings) -> Iterator[Any]:
    client = s3_client(aws_settings)
    yield client
    client.close()


def race_writer(url: str, key: str, index: int, barrier: Any, results: Any) -> None:
    """Spawned: create-only put of a payload of its own once all writers are ready."""
    store = open_s3_store(url)
    barrier.wait()
    result = store.put_bytes(key, f"writer {index};".encode() * 5000, create_only=True)
    results.put((index, result.created))


def test_store_satisfies_protocol_and_names_itself(store: S3ObjectStore, s3_bucket: str) -> None:
    assert isinstance(store, ObjectStore)
    assert store.uri("a/b") == f"s3://{s3_bucket}/pre/fix/a/b"
    assert store.local_path("a/b") is None
    assert store.url.startswith(f"s3://{s3_bucket}/pre/fix?")
    assert open_s3_store(store.url).url == store.url


def test_every_put_is_encrypted_and_carries_its_sha256(store: S3ObjectStore, raw: Any) -> None:
    store.put_bytes("a", b"alpha")
    store.put_bytes("b", b"beta", create_only=True)
    store.copy("a", "c")
    for key, data in [("a", b"alpha"), ("b", b"beta"), ("c", b"alpha")]:
        head = raw.head_object(Bucket=store.bucket, Key=f"pre/fix/{key}")
        assert head["ServerSideEncryption"] == "AES256"
        assert head["Metadata"]["sha256"] == sha(data)
        info = store.head(key)
        assert info is not None
        assert info.sha256 == sha(data)


def test_kms_key_is_used_when_configured(
    s3_bucket: str, aws_settings: AwsSettings, raw: Any
) -> None:
    url = f"s3://{s3_bucket}/k?kms_key_id=alias/shardflow"
    store = open_s3_store(url, endpoint_url=aws_settings.endpoint_url, region="us-east-1")
    store.put_bytes("x", b"secret")
    head = raw.head_object(Bucket=s3_bucket, Key="k/x")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/shardflow")


def test_create_only_lost_race_is_reported_not_raised(store: S3ObjectStore) -> None:
    first = store.put_bytes(MARKER, b"winner", create_only=True)
    second = store.put_bytes(MARKER, b"loser", create_only=True)
    assert (first.created, second.created) == (True, False)
    assert store.get_bytes(MARKER, expected_sha256=sha(b"winner")) == b"winner"


def test_eight_processes_racing_create_only_leave_one_marker(store: S3ObjectStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8, timeout=60), ctx.Queue()
    procs = [
        ctx.Process(target=race_writer, args=(store.url, MARKER, i, barrier, results))
        for i in range(8)
    ]
    for proc in procs:
        proc.start()
    outcomes: list[tuple[int, bool]] = []
    deadline = time.monotonic() + 120
    while len(outcomes) < 8:
        try:
            outcomes.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except stdlib_queue.Empty:
            pytest.fail(f"writers stalled after {len(outcomes)} results")
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    winners = [i for i, created in outcomes if created]
    assert len(winners) == 1
    assert store.get_bytes(MARKER) == f"writer {winners[0]};".encode() * 5000
    assert [o.key for o in store.list("jobs/")] == [MARKER]


def test_corrupt_bytes_are_caught_by_our_own_reader(
    store: S3ObjectStore, raw: Any, tmp_path: Path
) -> None:
    good = store.put_bytes(MARKER, b"the real marker").sha256
    # bytes replaced behind the store's back, the recorded digest kept (bit rot, or a
    # writer that does not hash): moto verifies nothing, so only our reader can notice
    raw.put_object(
        Bucket=store.bucket,
        Key=f"pre/fix/{MARKER}",
        Body=b"the torn marker",
        Metadata={"sha256": good},
    )
    with pytest.raises(ChecksumMismatchError, match=good):
        store.get_bytes(MARKER, expected_sha256=good)
    with pytest.raises(ChecksumMismatchError, match="metadata"):
        store.get_bytes(MARKER)
    dest = tmp_path / "kept"
    dest.write_bytes(b"previous")
    with pytest.raises(ChecksumMismatchError):
        store.get_file(MARKER, dest)
    assert dest.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [dest]


def small_multipart(s3_bucket: str, aws_settings: AwsSettings) -> S3ObjectStore:
    return S3ObjectStore(
        s3_bucket, "mp", settings=aws_settings, multipart_threshold=6 * MiB, part_size=5 * MiB
    )


def test_multipart_put_round_trips_and_is_create_only(
    s3_bucket: str, aws_settings: AwsSettings, raw: Any, tmp_path: Path
) -> None:
    store = small_multipart(s3_bucket, aws_settings)
    data = bytes(range(256)) * (11 * MiB // 256 + 7)  # 3 parts: 5 + 5 + a bit
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    put = store.put_file("big", src, create_only=True)
    assert (put.size, put.sha256, put.created) == (len(data), sha(data), True)
    head = raw.head_object(Bucket=s3_bucket, Key="mp/big")
    assert head["ETag"].endswith('-3"')  # really went up in three parts
    assert head["ServerSideEncryption"] == "AES256"
    assert store.get_bytes("big", expected_sha256=sha(data)) == data
    again = store.put_bytes("big", b"x" * (7 * MiB), create_only=True)
    assert again.created is False
    assert store.get_bytes("big") == data
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_failed_multipart_upload_is_aborted(
    s3_bucket: str, aws_settings: AwsSettings, raw: Any
) -> None:
    store = small_multipart(s3_bucket, aws_settings)
    calls = {"parts": 0}

    def fail_second_part(**kwargs: Any) -> None:
        calls["parts"] += 1
        if calls["parts"] == 2:
            raise ConnectionResetError("injected: the network dropped mid-upload")

    store.client.meta.events.register("before-call.s3.UploadPart", fail_second_part)
    with pytest.raises(ConnectionResetError):
        store.put_bytes("big", b"y" * (12 * MiB))
    assert store.head("big") is None
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_list_paginates_past_a_page(s3_bucket: str, aws_settings: AwsSettings) -> None:
    store = S3ObjectStore(s3_bucket, "", settings=aws_settings, list_page_size=7)
    keys = [f"jobs/j1/tasks/t{i:03d}.json" for i in range(40)]
    for key in keys:
        store.put_bytes(key, b"{}")
    store.put_bytes("jobs/j2/x", b"")
    assert [o.key for o in store.list("jobs/j1/")] == keys
    assert store.delete_prefix("jobs/j1/") == 40
    assert [o.key for o in store.list("")] == ["jobs/j2/x"]


def test_get_range_reads_a_byte_range(store: S3ObjectStore) -> None:
    store.put_bytes("r", b"0123456789")
    assert store.get_range("r", 2, 5) == b"234"
    assert store.get_range("r", 8, 100) == b"89"
    assert store.get_range("r", 10, 20) == b""
    with pytest.raises(NotFoundError):
        store.get_range("missing", 0, 0)


class _Body:
    """The raw body of a fabricated HTTP response (what AWSResponse.content reads)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def slow_down(burst: int, sent: list[str]) -> Any:
    """A before-send hook answering 503 SlowDown to the first ``burst`` requests."""

    def hook(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(request.url)
        if len(sent) <= burst:
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
            return AWSResponse(request.url, 503, HTTPHeaders(), _Body(body))
        return None

    return hook


def test_slowdown_burst_is_retried_by_botocore_within_bounds(
    s3_bucket: str, moto_server: str
) -> None:
    settings = AwsSettings(region="us-east-1", endpoint_url=moto_server, max_attempts=3)
    store = S3ObjectStore(s3_bucket, "p", settings=settings)
    sent: list[str] = []
    store.client.meta.events.register("before-send.s3.PutObject", slow_down(2, sent))
    assert store.put_bytes("k", b"v", create_only=True).created is True
    assert len(sent) == 3  # two 503s, then the write: no retries of our own on top
    # a burst longer than the attempts allow fails after exactly max_attempts sends
    stuck = S3ObjectStore(s3_bucket, "p", settings=settings)
    sent_stuck: list[str] = []
    stuck.client.meta.events.register("before-send.s3.PutObject", slow_down(99, sent_stuck))
    with pytest.raises(StoreError, match="SlowDown"):
        stuck.put_bytes("k2", b"v")
    assert len(sent_stuck) == 3
    assert stuck.head("k2") is None


def test_sweep_aborts_stale_uploads_and_deletes_superseded_attempts(
    store: S3ObjectStore, raw: Any
) -> None:
    upload = raw.create_multipart_upload(Bucket=store.bucket, Key="pre/fix/jobs/j1/output/x")
    initiated = raw.list_multipart_uploads(Bucket=store.bucket)["Uploads"][0]["Initiated"]
    for key in ["0001.parquet", "0002.parquet", "0002.failures.parquet", "0003.parquet"]:
        store.put_bytes(f"jobs/j1/results/t1/{key}", key.encode())
    store.put_bytes("jobs/j1/results/t2/0001.parquet", b"running, no marker yet")
    marker = {
        "result_key": "jobs/j1/results/t1/0002.parquet",
        "failures_key": "jobs/j1/results/t1/0002.failures.parquet",
    }
    store.put_bytes(MARKER, orjson.dumps(marker), create_only=True)
    # moto stamps every upload with one fixed date: "now" just after it keeps it fresh
    fresh = store.sweep(older_than_seconds=3600, now=initiated.timestamp() + 60)
    assert (fresh.aborted_uploads, fresh.deleted_objects) == (0, 0)
    report = store.sweep(older_than_seconds=0, now=time.time() + 1)
    assert (report.aborted_uploads, report.deleted_objects, report.unreadable_markers) == (1, 2, 0)
    assert [o.key for o in store.list("jobs/")] == [
        "jobs/j1/results/t1.done",
        "jobs/j1/results/t1/0002.failures.parquet",
        "jobs/j1/results/t1/0002.parquet",
        "jobs/j1/results/t2/0001.parquet",
    ]
    assert raw.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    assert upload["UploadId"]


@pytest.mark.parametrize(
    "url",
    ["s3://", "s3://UPPER/x", "gs://bucket/x", "s3://bucket/x?colour=red", "s3://bucket/../x"],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_s3_store(url)
