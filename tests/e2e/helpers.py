"""Running the real `shardflow` command in a scratch folder, and reading what it left."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]


def shardflow(
    args: Sequence[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    check: int | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "shardflow.cli.main", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"shardflow {' '.join(args)} exited {proc.returncode}, expected {check}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


def run_json(args: Sequence[str], cwd: Path, **kw: Any) -> dict[str, Any]:
    proc = shardflow([*args, "--json"], cwd, **kw)
    return orjson.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def write_job(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path
