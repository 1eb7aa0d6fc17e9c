"""The write path of S3ObjectStore: single and multipart puts, create-only.

A single put sends the body with its SHA-256 (``ChecksumSHA256``) and our hex digest as
metadata. Above the store's threshold the upload is driven by hand, part by part (each
with its own checksum), because only ``CompleteMultipartUpload`` can carry
``If-None-Match``; any failure aborts the upload.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shardflow.aws import aws_error, error_code, http_status, retried
from shardflow.errors import ConfigError, NotFoundError
from shardflow.objectstore.base import PutResult

if TYPE_CHECKING:
    from shardflow.objectstore.s3 import S3ObjectStore

MAX_PARTS = 10_000
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Digest:
    """A SHA-256 as hex (our metadata, our checks) and base64 (S3's checksum header)."""

    hex: str
    b64: str

    @classmethod
    def of(cls, h: Any) -> Digest:
        return cls(h.hexdigest(), base64.b64encode(h.digest()).decode("ascii"))

    @classmethod
    def of_hex(cls, hexdigest: str) -> Digest:
        return cls(hexdigest, base64.b64encode(bytes.fromhex(hexdigest)).decode("ascii"))


def digest_of(data: bytes) -> Digest:
    return Digest.of(hashlib.sha256(data))


def put_single(
    store: S3ObjectStore,
    full: str,
    body: Callable[[], IO[bytes]],
    digest: Digest,
    create_only: bool,
) -> bool:
    """One PutObject of ``body()`` (reopened for the one retry of a 409). True if written;
    False if ``create_only`` and the key holds another writer's object (412)."""
    params: dict[str, Any] = {
        "Bucket": store.bucket,
        "Key": full,
        "ChecksumAlgorithm": "SHA256",
        "ChecksumSHA256": digest.b64,
        "Metadata": {"sha256": digest.hex},
        **store.sse_params(),
    }
    if create_only:
        params["IfNoneMatch"] = "*"
    for attempt in (1, 2):
        with body() as stream:
            try:
                store.client.put_object(Body=stream, **params)
                return True
            except ClientError as exc:
                if create_only and lost_race(store, exc, full, digest):
                    return False
                if error_code(exc) == "ConditionalRequestConflict" and attempt == 1:
                    continue
                raise aws_error(exc, f"put {store.uri_of(full)}") from exc
            except BotoCoreError as exc:
                raise aws_error(exc, f"put {store.uri_of(full)}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def lost_race(store: S3ObjectStore, exc: ClientError, full: str, digest: Digest) -> bool:
    """True if a create-only write was refused because the key exists and is not
    ours. A retried request that finds our own bytes there won (its first try
    landed before the response was lost)."""
    if error_code(exc) != "PreconditionFailed" and http_status(exc) != 412:
        return False
    if retried(exc):
        info = store.head_full(full)
        if info is not None and info.sha256 == digest.hex:
            return False  # our own earlier try: report it as created
    return True


def put_multipart(
    store: S3ObjectStore, full: str, stream: IO[bytes], digest: Digest, create_only: bool
) -> bool:
    """Upload ``stream`` in parts of ``store.part_size`` and complete it (create-only
    when asked: False if another writer's object is there). Any failure aborts the
    upload and is raised as StoreError (or as it was, for non-AWS errors)."""
    what = f"multipart put {store.uri_of(full)}"
    try:
        upload = store.client.create_multipart_upload(
            Bucket=store.bucket,
            Key=full,
            ChecksumAlgorithm="SHA256",
            Metadata={"sha256": digest.hex},
            **store.sse_params(),  # type: ignore[arg-type]
        )
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, what) from exc
    upload_id = upload["UploadId"]
    try:
        parts: builtins.list[dict[str, Any]] = []
        number = 0
        while chunk := stream.read(store.part_size):
            number += 1
            if number > MAX_PARTS:
                raise ConfigError(f"{what}: more than {MAX_PARTS} parts; raise part_size")
            part_b64 = digest_of(chunk).b64
            response = store.client.upload_part(
                Bucket=store.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=part_b64,
            )
            parts.append(
                {"ETag": response["ETag"], "PartNumber": number, "ChecksumSHA256": part_b64}
            )
        return _complete(store, full, upload_id, parts, digest, create_only)
    except BaseException as exc:
        abort_quietly(store, full, upload_id)
        if isinstance(exc, ClientError | BotoCoreError):
            raise aws_error(exc, what) from exc
        raise


def _complete(
    store: S3ObjectStore,
    full: str,
    upload_id: str,
    parts: builtins.list[dict[str, Any]],
    digest: Digest,
    create_only: bool,
) -> bool:
    params: dict[str, Any] = {
        "Bucket": store.bucket,
        "Key": full,
        "UploadId": upload_id,
        "MultipartUpload": {"Parts": parts},
    }
    if create_only:
        params["IfNoneMatch"] = "*"
    for attempt in (1, 2):
        try:
            store.client.complete_multipart_upload(**params)
            return True
        except ClientError as exc:
            if create_only and lost_race(store, exc, full, digest):
                abort_quietly(store, full, upload_id)
                return False
            if error_code(exc) == "ConditionalRequestConflict" and attempt == 1:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def abort_quietly(store: S3ObjectStore, full: str, upload_id: str) -> None:
    """Abort an upload; a failure is logged, not raised (the sweeper retries it)."""
    try:
        store.client.abort_multipart_upload(Bucket=store.bucket, Key=full, UploadId=upload_id)
    except (ClientError, BotoCoreError) as exc:
        # the original failure matters more; sweep() aborts what is left behind
        log.warning("could not abort multipart upload of %s: %s", store.uri_of(full), exc)


def copy_object(store: S3ObjectStore, src: str, dst: str) -> PutResult:
    """:meth:`S3ObjectStore.copy`."""
    src_full, dst_full = store.full_key(src), store.full_key(dst)
    for attempt in (1, 2):
        try:
            r = store.client.head_object(Bucket=store.bucket, Key=src_full)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND or http_status(exc) == 404:
                raise NotFoundError(f"object {src!r} not found in {store.url_base}") from exc
            raise aws_error(exc, f"copy {store.uri(src)}") from exc
        sha = (
            r.get("Metadata", {}).get("sha256") or hashlib.sha256(store.get_bytes(src)).hexdigest()
        )
        try:
            store.client.copy_object(
                Bucket=store.bucket,
                Key=dst_full,
                CopySource={"Bucket": store.bucket, "Key": src_full},
                CopySourceIfMatch=r["ETag"],
                MetadataDirective="COPY",
                **store.sse_params(),  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if http_status(exc) == 412 and attempt == 1:
                continue  # the source changed between head and copy: copy the new one
            raise aws_error(exc, f"copy {store.uri(src)} to {store.uri(dst)}") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, f"copy {store.uri(src)} to {store.uri(dst)}") from exc
        return PutResult(key=dst, size=int(r["ContentLength"]), sha256=sha)
    raise NotFoundError(f"object {src!r} kept changing while being copied")
