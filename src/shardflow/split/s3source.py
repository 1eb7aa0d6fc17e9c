"""``s3://`` inputs: a :class:`~shardflow.split.sources.Source` over an S3 object.

Byte-range batches are read with ranged GETs, so a worker fetches only its batch. Every
read is conditional on the ETag seen when the source was opened (``If-Match``): an input
replaced after the split fails loudly (:class:`InputError`) instead of yielding a
mixture of two files. Globs (``s3://bucket/logs/2024-*.jsonl.gz``) list the prefix up to
the first wildcard and match whole keys with :func:`fnmatch.fnmatchcase` (``*`` also
matches ``/``).

:func:`register_s3_source` plugs the scheme into :mod:`shardflow.split.sources`; the
adapter builder calls it when the config's input or storage is on S3, in every process
that reads inputs (coordinator and workers).
"""

from __future__ import annotations

import fnmatch
import io
import threading
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import AwsSettings, error_code, http_status, s3_client
from shardflow.errors import InputError
from shardflow.split.sources import register_scheme

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_GLOB_CHARS = "*?["
_BUFFER = 1 << 20

__all__ = ["S3Source", "expand_s3", "open_s3_source", "register_s3_source"]


def split_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; InputError if either is missing."""
    if not url.startswith("s3://"):
        raise InputError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise InputError(f"an s3 input names a bucket and a key: {url}")
    return bucket, key


class _BodyReader(io.RawIOBase):
    """A raw stream over a botocore StreamingBody (for io.BufferedReader)."""

    def __init__(self, body: Any, url: str) -> None:
        super().__init__()
        self._body = body
        self._url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._body.read(len(buffer))
        except BotoCoreError as exc:
            raise InputError(f"reading {self._url} failed: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Source:
    """One S3 object as an input, pinned to the ETag it had when opened."""

    def __init__(
        self, client: S3Client, bucket: str, key: str, *, size: int, mtime: float, etag: str
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._size = size
        self._mtime = mtime
        self._etag = etag

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    @property
    def size(self) -> int:
        return self._size

    @property
    def mtime(self) -> float:
        return self._mtime

    @property
    def etag(self) -> str:
        return self._etag

    def _get(self, **extra: Any) -> Any:
        try:
            return self._client.get_object(
                Bucket=self._bucket, Key=self._key, IfMatch=self._etag, **extra
            )
        except ClientError as exc:
            if http_status(exc) == 412:
                raise InputError(f"input {self.url} changed since the job was split") from exc
            if error_code(exc) in ("NoSuchKey", "404"):
                raise InputError(f"input not found: {self.url}") from exc
            raise InputError(f"cannot read input {self.url}: {exc}") from exc
        except BotoCoreError as exc:
            raise InputError(f"cannot read input {self.url}: {exc}") from exc

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` by one ranged GET (fewer at the end of the object)."""
        end = min(end, self._size)
        if end <= start:
            return b""
        body = self._get(Range=f"bytes={start}-{end - 1}")["Body"]
        try:
            data: bytes = body.read()
        except BotoCoreError as exc:
            raise InputError(f"reading {self.url} failed: {exc}") from exc
        return data

    def open(self) -> BinaryIO:
        """The whole object as a buffered stream (one GET); the caller closes it."""
        raw = _BodyReader(self._get()["Body"], self.url)
        return io.BufferedReader(raw, _BUFFER)


def open_s3_source(url: str, *, client: S3Client) -> S3Source:
    """Stat the object at ``url``; InputError if it is missing or unreadable."""
    bucket, key = split_s3_url(url)
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            raise InputError(f"input not found: {url}") from exc
        raise InputError(f"cannot read input {url}: {exc}") from exc
    except BotoCoreError as exc:
        raise InputError(f"cannot read input {url}: {exc}") from exc
    return S3Source(
        client,
        bucket,
        key,
        size=int(head["ContentLength"]),
        mtime=head["LastModified"].timestamp(),
        etag=head["ETag"],
    )


def expand_s3(pattern: str, *, client: S3Client) -> list[str]:
    """The sorted ``s3://`` URLs of the objects whose key matches the glob ``pattern``."""
    bucket, key_pattern = split_s3_url(pattern)
    cut = min((i for i, c in enumerate(key_pattern) if c in _GLOB_CHARS), default=len(key_pattern))
    urls: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key_pattern[:cut]
        ):
            for obj in page.get("Contents", []):
                if fnmatch.fnmatchcase(obj["Key"], key_pattern):
                    urls.append(f"s3://{bucket}/{obj['Key']}")
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot list inputs {pattern}: {exc}") from exc
    return sorted(urls)


def register_s3_source(settings: AwsSettings | None = None) -> None:
    """Make ``s3://`` URLs valid inputs, read with ``settings`` (region, endpoint,
    retries). The client is created on first use and shared (boto3 clients are
    thread-safe)."""
    lock = threading.Lock()
    clients: list[S3Client] = []

    def client() -> S3Client:
        with lock:
            if not clients:
                clients.append(s3_client(settings or AwsSettings()))
            return clients[0]

    register_scheme(
        "s3",
        lambda url: open_s3_source(url, client=client()),
        expand=lambda pattern: expand_s3(pattern, client=client()),
    )
