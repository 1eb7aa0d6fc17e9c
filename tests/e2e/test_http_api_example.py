"""The example that calls a local HTTP API runs under its shared rate limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shardflow.statestore.sqlite import SqliteStateStore
from tests.e2e.helpers import REPO, run_json


def test_http_api_example_runs_under_its_limit_and_status_shows_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "http-api" / "run.py"), "--job-id", "api"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = run_json(["status", "api"], tmp_path, check=0)
    assert summary["status"] == "SUCCEEDED"
    assert summary["items"]["succeeded"] == 2000
    (limit,) = summary["limits"]
    assert (limit["name"], limit["rate"], limit["burst"]) == ("geo_api", 400.0, 40.0)
    # 2,000 calls at 400/s with a burst of 40 cannot finish in under (2000 - 40) / 400 s
    assert summary["elapsed_seconds"] >= (2000 - 40) / 400
    # every call went through ctx.limited: counted in the job's api metrics
    state = SqliteStateStore(tmp_path / ".shardflow" / "state.db")
    try:
        counters = state.read_counters("api")
    finally:
        state.close()
    assert counters["metrics.api_calls"] >= 2000
    assert counters["metrics.api_ms"] > 0
