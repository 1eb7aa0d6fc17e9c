"""The ObjectStore adapters that ``test_objectstore.py`` runs its contract suite against.

To add an adapter, append one :class:`StoreCase` to :data:`STORE_CASES`. Its factory
receives ``tmp_path`` and the pytest ``request`` (for finalizers and server fixtures) and
returns a fresh, empty store in a :class:`StoreHarness`:

- ``corrupt(key, data)`` replaces an object's bytes behind the store's back (the
  checksum-mismatch cases use it).
- ``opener``: a picklable callable that opens the same store in another process, or
  None; the multi-process case is skipped without one.
- ``max_stream_memory``: the peak of Python allocations (bytes, per ``tracemalloc``)
  allowed while putting or getting a 50 MB file, or None for a store that holds objects
  in memory anyway.

Module-level worker functions live here (not in the test module) so that ``spawn``
children import only this small module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardflow.objectstore.base import ObjectStore
from shardflow.objectstore.local import LocalObjectStore, open_local_store
from shardflow.objectstore.memory import MemoryObjectStore


@dataclass
class StoreHarness:
    store: ObjectStore
    corrupt: Callable[[str, bytes], None]
    opener: Callable[[], ObjectStore] | None = None
    max_stream_memory: int | None = 8 << 20


@dataclass(frozen=True)
class StoreCase:
    id: str
    make: Callable[[Path, pytest.FixtureRequest], StoreHarness]
    marks: tuple[pytest.MarkDecorator, ...] = ()
    # what the adapter can do beyond the shared contract; tests marked
    # ``@pytest.mark.requires(...)`` run only on cases that have it (tests/contract/conftest.py)
    capabilities: frozenset[str] = frozenset()


def _local(tmp_path: Path, request: pytest.FixtureRequest) -> StoreHarness:
    root = tmp_path / "store"
    store = LocalObjectStore(root)

    def corrupt(key: str, data: bytes) -> None:
        path = store.local_path(key)
        assert path is not None, key
        path.write_bytes(data)

    return StoreHarness(store, corrupt, functools.partial(open_local_store, str(root)))


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> StoreHarness:
    store = MemoryObjectStore()
    return StoreHarness(store, store.corrupt, None, max_stream_memory=None)


STORE_CASES: list[StoreCase] = [
    StoreCase("local", _local, capabilities=frozenset({"shared"})),
    StoreCase("memory", _memory),
]


def _s3(tmp_path: Path, request: pytest.FixtureRequest) -> StoreHarness:
    from shardflow.objectstore.s3 import S3ObjectStore, open_s3_store

    bucket = request.getfixturevalue("s3_bucket")
    store = S3ObjectStore(bucket, "contract", settings=request.getfixturevalue("aws_settings"))

    def corrupt(key: str, data: bytes) -> None:
        # new bytes without our sha256 metadata: only an expected digest can catch them
        store.client.put_object(Bucket=bucket, Key=f"contract/{key}", Body=data)

    # moto runs in this process and holds request bodies in memory: no memory bound
    return StoreHarness(
        store, corrupt, functools.partial(open_s3_store, store.url), max_stream_memory=None
    )


STORE_CASES.append(
    StoreCase("s3", _s3, marks=(pytest.mark.aws,), capabilities=frozenset({"shared"}))
)


def create_only_writer(
    opener: Callable[[], ObjectStore], barrier: Any, results: Any, key: str, index: int
) -> None:
    """Spawned writer: wait for the others, then create-only put its own payload.

    Reports ``(index, created, sha256)`` through the multiprocessing queue ``results``.
    """
    store = opener()
    payload = writer_payload(index)
    barrier.wait()
    result = store.put_bytes(key, payload, create_only=True)
    results.put((index, result.created, result.sha256))


def writer_payload(index: int) -> bytes:
    """A distinct payload per writer, large enough that a torn write would show."""
    return f"writer {index:02d};".encode() * 40_000
