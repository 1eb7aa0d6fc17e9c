"""CSV cleanup handler: trim, normalise and type the columns of one order."""

from __future__ import annotations

from datetime import date
from typing import Any


def clean(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    amount = float(record["amount"])  # "n/a" raises ValueError: a permanent failure
    return {
        "order_id": record["order_id"],
        "customer": " ".join(record["customer"].split()),
        "amount_cents": round(amount * 100),
        "currency": record["currency"].strip().upper(),
        "placed_at": date.fromisoformat(record["placed_at"]).isoformat(),
        "has_note": bool(record["note"].strip()),
    }
