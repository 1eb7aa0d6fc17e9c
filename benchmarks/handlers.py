"""The handlers every benchmark runs, the same code for shardflow and for the baselines.

``enrich`` is the map workload's per-record handler: a few dict operations and a
SHA-256 of one field, like examples/quickstart/enrich.py. ``echo`` returns its record
(the no-op of the per-task overhead benchmark).
"""

from __future__ import annotations

import hashlib
from typing import Any


def enrich(record: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    email = record["email"]
    age = int(record["age"])
    return {
        "id": record["id"],
        "name": record["name"].title(),
        "domain": email.rsplit("@", 1)[1].lower(),
        "email_hash": hashlib.sha256(email.lower().encode()).hexdigest(),
        "age_group": f"{age // 10 * 10}s",
        "country": record["country"].upper(),
        "score": round(float(record["score"]), 2),
        "tags": len(record.get("tags", ())),
    }


def echo(record: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    return record
