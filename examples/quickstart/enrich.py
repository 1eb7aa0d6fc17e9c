"""Quickstart handler: one user record in, one enriched record out."""

from __future__ import annotations

import hashlib
from typing import Any


def enrich(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    email = record["email"]
    if "@" not in email:
        raise ValueError(f"not an email address: {email!r}")  # recorded as a failure
    domain = email.rsplit("@", 1)[1]
    age = int(record["age"])
    return {
        "id": record["id"],
        "name": record["name"].title(),
        "domain": domain.lower(),
        "email_hash": hashlib.sha256(email.lower().encode()).hexdigest()[:16],
        "age_group": f"{age // 10 * 10}s",
        "country": record["country"].upper(),
        "score": round(float(record["score"]), 2),
        "tags": len(record.get("tags", [])),
    }
