"""Token-bucket storage: one row per named limit in the state store.

The refill math is pure (:mod:`shardflow.ratelimit.bucket`); the storage gives one
compare-and-set primitive, so the algorithm is written once for SQLite and DynamoDB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class BucketState:
    key: str
    rate: float
    burst: float
    tokens: float
    last_refill: float
    version: int = 0
    paused: bool = False
    leased: float = 0.0


@runtime_checkable
class BucketStore(Protocol):
    def get_bucket(self, key: str) -> BucketState | None: ...

    def cas_bucket(self, state: BucketState, expected_version: int) -> BucketState:
        """Write ``state`` with version ``expected_version + 1`` if the stored version is
        ``expected_version`` (0: the bucket must not exist). Raise ConflictError otherwise."""
        ...

    def delete_buckets(self, prefix: str) -> int: ...
