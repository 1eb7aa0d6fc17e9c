"""Handlers for the job-control tests (imported by file from job configs)."""

from __future__ import annotations

import os
import time
from typing import Any


def slow(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    time.sleep(float(os.environ.get("SLOW_SECONDS", "0.002")))
    return {"id": record["id"]}


def crashy(record: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Kills its worker process on one record while the flag file exists."""
    flag = os.environ.get("CRASH_FLAG", "")
    if flag and os.path.exists(flag) and record["id"] == "u0000042":
        os._exit(3)
    return {"id": record["id"]}
