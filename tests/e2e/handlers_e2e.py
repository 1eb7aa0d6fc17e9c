"""Handlers used by the end-to-end and fault tests (imported by file from job configs)."""

from __future__ import annotations

import hashlib
from typing import Any


def fails(record: dict[str, Any]) -> bool:
    """The items this handler refuses: a deterministic ~1.4% of the synthetic records."""
    return bool(record.get("age") == 42)


def enrich(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    if fails(record):
        raise ValueError(f"age 42 is not allowed for {record['id']}")
    return {
        "id": record["id"],
        "digest": hashlib.sha256(str(record["email"]).encode()).hexdigest()[:16],
        "name_len": len(record["name"]),
        "score": record["score"],
    }
