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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


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

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> PutResult: ...

    def put_file(self, key: str, path: Path, *, create_only: bool = False) -> PutResult: ...

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
