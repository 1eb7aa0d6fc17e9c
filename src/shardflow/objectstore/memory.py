"""An in-memory :class:`~shardflow.objectstore.base.ObjectStore` for unit tests.

Same semantics as the local store (:mod:`.local`) and the same key rules; it passes the
same contract suite. ``head`` and ``list`` report the SHA-256 recorded at write time.
:meth:`MemoryObjectStore.corrupt` changes stored bytes behind the checksum's back, so
tests can check that readers notice.
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shardflow.errors import ChecksumMismatchError, NotFoundError
from shardflow.layout import validate_id
from shardflow.objectstore.base import ObjectInfo, PutResult, validate_key, validate_prefix
from shardflow.objectstore.files import CHUNK


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    sha256: str
    modified: float


class MemoryObjectStore:
    """Objects in a dict behind a lock; thread-safe, not shared between processes."""

    def __init__(self, name: str = "memory", *, clock: Callable[[], float] = time.time) -> None:
        self._name = validate_id(name, "store name")
        self._clock = clock
        self._lock = threading.Lock()
        self._objects: dict[str, _Object] = {}

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, durable: bool = True
    ) -> PutResult:
        """Store ``data`` at ``key``. With ``create_only`` an existing object is left
        untouched and ``created=False`` (size and sha256 describe the refused payload)."""
        validate_key(key)
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            if create_only and key in self._objects:
                return PutResult(key=key, size=len(data), sha256=sha, created=False)
            self._objects[key] = _Object(data, sha, self._clock())
        return PutResult(key=key, size=len(data), sha256=sha, created=True)

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
        validate_key(key)
        put = self.put_bytes(key, Path(path).read_bytes(), create_only=create_only)
        if move:
            Path(path).unlink()
        return put

    def sync(self) -> None:
        return None

    def _get(self, key: str) -> _Object:
        validate_key(key)
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            raise NotFoundError(f"object {key!r} not found in {self.url}")
        return obj

    def get_bytes(self, key: str, *, expected_sha256: str | None = None) -> bytes:
        """The object's bytes; NotFoundError, or ChecksumMismatchError on a mismatch."""
        data = self._get(key).data
        if expected_sha256 is not None:
            actual = hashlib.sha256(data).hexdigest()
            if expected_sha256.lower() != actual:
                raise ChecksumMismatchError(
                    f"object {key!r} in {self.url}: expected sha256 {expected_sha256}, got {actual}"
                )
        return data

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> None:
        """Write the object to ``dest``; on a mismatch ``dest`` is left as it was."""
        data = self.get_bytes(key, expected_sha256=expected_sha256)
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        with part.open("wb") as f:
            for offset in range(0, len(data), CHUNK):
                f.write(data[offset : offset + CHUNK])
        part.replace(dest)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"invalid range [{start}, {end})")
        return self._get(key).data[start:end]

    def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        with self._lock:
            obj = self._objects.get(key)
        if obj is None:
            return None
        return ObjectInfo(key=key, size=len(obj.data), modified=obj.modified, sha256=obj.sha256)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order (a snapshot)."""
        validate_prefix(prefix)
        with self._lock:
            items = sorted((k, o) for k, o in self._objects.items() if k.startswith(prefix))
        for key, obj in items:
            yield ObjectInfo(key=key, size=len(obj.data), modified=obj.modified, sha256=obj.sha256)

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        with self._lock:
            doomed = [k for k in self._objects if k.startswith(prefix)]
            for key in doomed:
                del self._objects[key]
        return len(doomed)

    def copy(self, src: str, dst: str) -> PutResult:
        """Copy ``src`` to ``dst``, overwriting it; NotFoundError if ``src`` is missing."""
        validate_key(dst)
        obj = self._get(src)
        with self._lock:
            self._objects[dst] = _Object(obj.data, obj.sha256, self._clock())
        return PutResult(key=dst, size=len(obj.data), sha256=obj.sha256, created=True)

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def uri(self, key: str) -> str:
        return f"{self.url}/{validate_key(key)}"

    def keys(self) -> builtins.list[str]:
        """Every key, sorted (for test assertions)."""
        with self._lock:
            return sorted(self._objects)

    def corrupt(self, key: str, data: bytes) -> None:
        """Test hook: replace the stored bytes but keep the recorded checksum."""
        obj = self._get(key)
        with self._lock:
            self._objects[key] = _Object(bytes(data), obj.sha256, obj.modified)
