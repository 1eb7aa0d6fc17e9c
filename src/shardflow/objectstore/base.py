"""The ObjectStore port: where batches, results, markers and outputs live.

Adapters: :mod:`.local` (a directory, the embedded default), :mod:`.s3` (S3 through
boto3), :mod:`.memory` (an in-memory fake for unit tests). Keys are built only by
:mod:`shardflow.layout`; an adapter never invents a key.

Contract (checked by ``tests/contract/test_objectstore.py`` for every adapter):

- ``put_*`` with ``create_only=True`` writes only if the key does not exist; of N
  concurrent writers exactly one gets ``created=True``, the others ``created=False``
  (a lost race is reported, not raised) and the object is the winner's, whole.
- A put is atomic: a reader sees the old object, no object, or the whole new one.
- ``sha256`` is computed while writing and returned; ``get_*`` with
  ``expected_sha256`` raises :class:`ChecksumMismatchError` when the bytes differ.
- ``get_*`` and ``get_range`` raise :class:`NotFoundError` for a missing key;
  ``delete`` of a missing key is not an error.
- A put is durable when it returns, unless it was made with ``durable=False``: then it is
  visible at once (to every process) and durable after the next :meth:`ObjectStore.sync`.
  A worker slot writes a commit group's objects that way and syncs once before the group's
  task rows commit, so one flush serves many objects (S3's puts are always durable, and
  its ``sync`` does nothing).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

MAX_KEY_BYTES = 1024
TMP_DIR = ".tmp"
"""The local store's temp area: no key may start with it (every adapter refuses it, so a
key valid on one store is valid on all)."""


def _check_segments(value: str, what: str, segments: builtins.list[str]) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"invalid object {what} {value!r}: empty, '.' or '..' segment")
    if segments and segments[0] == TMP_DIR:
        raise ValueError(f"invalid object {what} {value!r}: {TMP_DIR} is reserved")


def validate_key(key: str) -> str:
    """``key`` if it is a relative POSIX key, else ValueError.

    Refused: empty keys, absolute keys, backslashes, NUL, empty / ``.`` / ``..``
    segments, keys under the reserved ``.tmp/`` and keys over 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid object key {key!r}: empty")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}: absolute, backslash or NUL")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"invalid object key {key[:40]!r}...: longer than {MAX_KEY_BYTES} bytes")
    _check_segments(key, "key", key.split("/"))
    return key


def validate_prefix(prefix: str) -> str:
    """``prefix`` if it is ``""`` or a valid key, or a valid key followed by ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: float
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class PutResult:
    key: str
    size: int
    sha256: str
    created: bool = True


@runtime_checkable
class ObjectStore(Protocol):
    @property
    def url(self) -> str:
        """The store's URL (``file:///abs/path`` or ``s3://bucket/prefix``)."""
        ...

    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, durable: bool = True
    ) -> PutResult: ...

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
        """Store the file at ``path``. ``sha256``: its digest, when the caller computed it
        while writing (the file is not read twice); ``move``: the caller gives the file up
        (a local store moves it into place instead of copying it; it is gone after)."""
        ...

    def sync(self) -> None:
        """Make every put this object made with ``durable=False`` durable."""
        ...

    def get_bytes(self, key: str, *, expected_sha256: str | None = None) -> bytes: ...

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> None: ...

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer at its end)."""
        ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, paginated lazily."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many were deleted."""
        ...

    def copy(self, src: str, dst: str) -> PutResult:
        """Copy an object (atomically visible at ``dst``); overwrites ``dst``."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file holding the object's bytes, when the store is local, else None."""
        ...

    def uri(self, key: str) -> str:
        """A URL a user can open for ``key`` (file:// or s3://)."""
        ...
