"""S3ObjectStore: the ObjectStore port on Amazon S3 (or an S3-compatible store).

Every put sends the object's SHA-256 (``ChecksumSHA256``, so S3 rejects a body torn in
transit) and stores our own hex digest as metadata (``x-amz-meta-sha256``), which
``head`` reports. Every read hashes the bytes itself and compares them with the
expected digest, or with the metadata when none is given: emulators do not verify
checksums, and a digest in our own hands is what the commit protocol trusts.

Create-only puts use ``If-None-Match: *``. A lost race (412) is reported as
``created=False``; a 409 ConditionalRequestConflict (a concurrent write to the same key
still in progress) is retried once. Objects above ``multipart_threshold`` are uploaded
in parts by hand, because boto3's managed transfer cannot send ``If-None-Match``:
``CompleteMultipartUpload`` carries the condition, and any failure aborts the upload
(:meth:`S3ObjectStore.sweep` aborts what a crash left behind).

Every put is encrypted server-side: SSE-S3 (``AES256``) by default, SSE-KMS when a key
is configured. Retries are botocore's (standard or adaptive mode, bounded attempts).
"""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import (
    AwsSettings,
    aws_error,
    error_code,
    http_status,
    parse_aws_url,
    s3_client,
    settings_from,
)
from shardflow.errors import ChecksumMismatchError, ConfigError, NotFoundError, StoreError
from shardflow.objectstore.base import ObjectInfo, PutResult, validate_key, validate_prefix
from shardflow.objectstore.files import hash_file
from shardflow.objectstore.s3_sweep import SweepReport, sweep_store
from shardflow.objectstore.s3_upload import (
    NOT_FOUND,
    Digest,
    abort_quietly,
    copy_object,
    digest_of,
    put_multipart,
    put_single,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
DEFAULT_MULTIPART_THRESHOLD = 64 * MiB
DEFAULT_PART_SIZE = 16 * MiB
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_CHUNK = MiB

log = logging.getLogger(__name__)

__all__ = ["S3ObjectStore", "SweepReport", "open_s3_store"]


class S3ObjectStore:
    """An ObjectStore in ``bucket`` under ``prefix`` (keys are relative to the prefix).

    ``multipart_threshold``: objects larger than this go up in parts of ``part_size``
    (at least 5 MiB, S3's minimum). ``list_page_size`` bounds each ListObjectsV2 page.
    Every AWS failure that is not part of the contract surfaces as StoreError.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: AwsSettings | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        list_page_size: int = 1000,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if multipart_threshold < part_size:
            raise ConfigError("multipart_threshold must be at least part_size")
        if not 1 <= list_page_size <= 1000:
            raise ConfigError("list_page_size must be between 1 and 1000")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self._bucket = bucket
        self._prefix = prefix
        self._root = f"{prefix}/" if prefix else ""
        self._settings = settings or AwsSettings()
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._page_size = list_page_size
        self._client = s3_client(self._settings)

    # -- identity ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``, with the options that reopen this store elsewhere."""
        return f"s3://{self._bucket}/{self._prefix}{self._settings.query()}"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> S3Client:
        """The botocore client (tests register event hooks on it)."""
        return self._client

    def close(self) -> None:
        """Close the client's connections (the store is unusable afterwards)."""
        self._client.close()

    def uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{self._full(key)}"

    def local_path(self, key: str) -> Path | None:
        return None

    def full_key(self, key: str) -> str:
        """The S3 key of ``key`` (the store's prefix in front)."""
        return self._full(key)

    def _full(self, key: str) -> str:
        return self._root + validate_key(key)

    def sse_params(self) -> dict[str, str]:
        """The server-side encryption parameters every write carries."""
        if self._settings.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._settings.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    # -- writes ------------------------------------------------------------------------

    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, durable: bool = True
    ) -> PutResult:
        """Write ``data`` at ``key``; with ``create_only`` an existing object is kept and
        the result says ``created=False`` (size and sha256 describe the refused payload).
        Every S3 put is durable when it returns, ``durable`` or not."""
        full = self._full(key)
        data = bytes(data)
        digest = digest_of(data)
        if len(data) > self._threshold:
            created = put_multipart(self, full, io.BytesIO(data), digest, create_only)
        else:
            created = put_single(self, full, lambda: io.BytesIO(data), digest, create_only)
        return PutResult(key=key, size=len(data), sha256=digest.hex, created=created)

    def sync(self) -> None:
        """Nothing to do: S3 acknowledges a put once it is durable."""

    def put_file(
        self,
        key: str,
        path: Path,
        *,
        create_only: bool = False,
        durable: bool = True,
        sha256: str | None = None,
        move: bool = False,
    ) -> PutResult:
        """Stream the file at ``path`` to ``key`` (hashed first unless ``sha256`` is given:
        the digest goes in the object's metadata, which S3 takes before the body); as
        :meth:`put_bytes` otherwise. With ``move`` the local file is removed after."""
        full = self._full(key)
        path = Path(path)
        size = path.stat().st_size
        digest = Digest.of_hex(sha256 if sha256 is not None else hash_file(path)[1])
        if size > self._threshold:
            with path.open("rb") as f:
                created = put_multipart(self, full, f, digest, create_only)
        else:
            created = put_single(self, full, lambda: path.open("rb"), digest, create_only)
        if move:
            path.unlink()
        return PutResult(key=key, size=size, sha256=digest.hex, created=created)

    # -- reads -------------------------------------------------------------------------

    def _get(self, key: str, **extra: Any) -> Any:
        """GetObject; NotFoundError if missing, None for a range past the end (416)."""
        full = self._full(key)
        try:
            return self._client.get_object(Bucket=self._bucket, Key=full, **extra)
        except ClientError as exc:
            code = error_code(exc)
            if code in NOT_FOUND:
                raise NotFoundError(f"object {key!r} not found in {self.url_base}") from exc
            if code == "InvalidRange" and "Range" in extra:
                return None
            raise aws_error(exc, f"get {self.uri(key)}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"get {self.uri(key)}") from exc

    def _verify(self, key: str, actual: str, expected: str | None, stored: str | None) -> None:
        if expected is not None and expected.lower() != actual:
            raise ChecksumMismatchError(
                f"object {key!r} in {self.url_base}: expected sha256 {expected}, got {actual}"
            )
        if expected is None and stored is not None and stored != actual:
            raise ChecksumMismatchError(
                f"object {key!r} in {self.url_base}: its metadata says sha256 {stored}, "
                f"its bytes hash to {actual}"
            )

    def get_bytes(self, key: str, *, expected_sha256: str | None = None) -> bytes:
        """The object's bytes, hashed by us. Raises NotFoundError, or
        ChecksumMismatchError when they differ from ``expected_sha256`` (or, without
        one, from the sha256 recorded in the object's metadata)."""
        response = self._get(key)
        try:
            data: bytes = response["Body"].read()
        except BotoCoreError as exc:
            raise aws_error(exc, f"read {self.uri(key)}") from exc
        meta = response.get("Metadata", {})
        self._verify(key, hashlib.sha256(data).hexdigest(), expected_sha256, meta.get("sha256"))
        return data

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> None:
        """Stream the object to ``dest`` (replaced atomically). On any failure, a
        checksum mismatch included, ``dest`` is left as it was."""
        response = self._get(key)
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        h = hashlib.sha256()
        try:
            with part.open("wb") as f:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    h.update(chunk)
                    f.write(chunk)
            meta = response.get("Metadata", {})
            self._verify(key, h.hexdigest(), expected_sha256, meta.get("sha256"))
            os.replace(part, dest)
        except BotoCoreError as exc:
            raise aws_error(exc, f"read {self.uri(key)}") from exc
        finally:
            part.unlink(missing_ok=True)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` through a ranged GET (fewer at the end of the object).
        ValueError if ``start < 0`` or ``end < start``; NotFoundError if missing."""
        if start < 0 or end < start:
            raise ValueError(f"invalid range [{start}, {end})")
        if start == end:
            if self.head(key) is None:
                raise NotFoundError(f"object {key!r} not found in {self.url_base}")
            return b""
        response = self._get(key, Range=f"bytes={start}-{end - 1}")
        if response is None:
            return b""  # the range starts at or past the end of an object that exists
        try:
            data: bytes = response["Body"].read()
        except BotoCoreError as exc:
            raise aws_error(exc, f"read {self.uri(key)}") from exc
        return data

    def head(self, key: str) -> ObjectInfo | None:
        """Size, modification time and our sha256 of the object; None if missing."""
        info = self.head_full(self._full(key))
        return None if info is None else ObjectInfo(key, info.size, info.modified, info.sha256)

    def head_full(self, full: str) -> ObjectInfo | None:
        try:
            r = self._client.head_object(Bucket=self._bucket, Key=full)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND or http_status(exc) == 404:
                return None
            raise aws_error(exc, f"head {self.uri_of(full)}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"head {self.uri_of(full)}") from exc
        return ObjectInfo(
            full,
            int(r["ContentLength"]),
            r["LastModified"].timestamp(),
            r.get("Metadata", {}).get("sha256"),
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order, one page at a time
        (``sha256`` is None: listings do not carry metadata)."""
        for obj in self._list_full(self._root + validate_prefix(prefix)):
            yield ObjectInfo(obj.key[len(self._root) :], obj.size, obj.modified)

    def _list_full(self, full_prefix: str) -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(
                Bucket=self._bucket,
                Prefix=full_prefix,
                PaginationConfig={"PageSize": self._page_size},
            ):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], obj["Size"], obj["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"list {self.uri_of(full_prefix)}") from exc

    # -- deletes and copies ------------------------------------------------------------

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._client.delete_object(Bucket=self._bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"delete {self.uri_of(full)}") from exc

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` in DeleteObjects batches of 1000;
        return how many were deleted. StoreError names the first key S3 refused."""
        return self.delete_full_keys(
            o.key for o in self._list_full(self._root + validate_prefix(prefix))
        )

    def delete_full_keys(self, keys: Iterable[str]) -> int:
        """Delete objects by their full bucket keys (the sweeper uses it); the count."""
        deleted = 0
        batch: builtins.list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                deleted += self._delete_batch(batch)
                batch = []
        if batch:
            deleted += self._delete_batch(batch)
        return deleted

    def _delete_batch(self, keys: builtins.list[str]) -> int:
        try:
            response = self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"delete {len(keys)} objects in s3://{self._bucket}") from exc
        errors = response.get("Errors", [])
        if errors:
            first = errors[0]
            raise StoreError(
                f"delete {self.uri_of(first.get('Key', '?'))}: {first.get('Code', '?')} "
                f"{first.get('Message', '')} ({len(errors)} of {len(keys)} keys refused)"
            )
        return len(keys)

    def copy(self, src: str, dst: str) -> PutResult:
        """Server-side copy of ``src`` to ``dst`` keeping its metadata and encrypting it
        like every put; the copy is of the version ``head`` saw (``CopySourceIfMatch``).
        NotFoundError if ``src`` is missing."""
        return copy_object(self, src, dst)

    # -- maintenance -------------------------------------------------------------------

    def sweep(self, older_than_seconds: float, now: float) -> SweepReport:
        """Abort multipart uploads under the prefix started before ``now -
        older_than_seconds`` and delete attempt objects that old which their task's
        ``.done`` marker does not name. See :mod:`.s3_sweep`."""
        return sweep_store(self, older_than_seconds=older_than_seconds, now=now)

    def iter_uploads(self) -> Iterator[tuple[str, str, float]]:
        """Open multipart uploads under the prefix: (full key, upload id, initiated)."""
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self._root):
                for upload in page.get("Uploads", []):
                    yield upload["Key"], upload["UploadId"], upload["Initiated"].timestamp()
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, f"list multipart uploads in {self.url_base}") from exc

    def abort_upload(self, full: str, upload_id: str) -> None:
        abort_quietly(self, full, upload_id)

    @property
    def part_size(self) -> int:
        return self._part_size

    @property
    def root(self) -> str:
        """The key prefix of this store inside the bucket (``""`` or ``prefix/``)."""
        return self._root

    @property
    def url_base(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def uri_of(self, full: str) -> str:
        return f"s3://{self._bucket}/{full}"


def open_s3_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    kms_key_id: str | None = None,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    part_size: int = DEFAULT_PART_SIZE,
) -> S3ObjectStore:
    """Open ``s3://bucket/prefix[?region=…&endpoint=…&kms_key_id=…]``.

    Options in the URL win over the keyword values (which come from the config's
    ``backends`` section). Raises ConfigError for a bad bucket name or option.
    """
    parsed = parse_aws_url(url, "s3")
    bucket = parsed.location
    if not 3 <= len(bucket) <= 63 or not all(
        c.islower() or c.isdigit() or c in ".-" for c in bucket
    ):
        raise ConfigError(f"{url!r}: invalid S3 bucket name {bucket!r}")
    settings = settings_from(
        parsed.options, endpoint_url=endpoint_url, region=region, kms_key_id=kms_key_id
    )
    try:
        return S3ObjectStore(
            bucket,
            parsed.path,
            settings=settings,
            multipart_threshold=multipart_threshold,
            part_size=part_size,
        )
    except ValueError as exc:
        raise ConfigError(f"{url!r}: {exc}") from exc
