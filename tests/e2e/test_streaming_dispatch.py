"""Dispatch streams: the first tasks run while the split is still reading the input, and
every task manifest part is written once, in order."""

from __future__ import annotations

import sys
from pathlib import Path

from shardflow.catalog import part_size
from shardflow.statestore.sqlite import SqliteStateStore
from shardflow.testing.synthetic import write_jsonl
from tests.e2e.helpers import run_json, write_job

SLOW_SPLIT = '''
import time

def one_per_batch(records, nbytes, line):
    """Cut before every record, slowly: the split takes about a second per 250 records."""
    time.sleep(0.004)
    return records >= 1
'''


def test_the_first_tasks_run_while_the_split_goes_on(tmp_path: Path) -> None:
    (tmp_path / "slowcut.py").write_text(SLOW_SPLIT)
    write_jsonl(tmp_path / "in.jsonl", 600, seed=1)
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: streaming
handler: {Path(__file__).parent / "handlers_e2e.py"}:enrich
input: {{path: in.jsonl}}
batching: {{function: "slowcut:one_per_batch"}}
resources: {{slots: 2}}
retry: {{tolerated_failure_percent: 50}}
""",
    )
    env = {"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}"}
    summary = run_json(["run", str(job), "--job-id", "stream"], tmp_path, env=env, check=0)
    assert summary["status"] == "SUCCEEDED"
    assert summary["tasks"]["total"] == 600

    state = SqliteStateStore(tmp_path / ".shardflow" / "state.db")
    events = {e.kind: e.at for e in reversed(state.list_events("stream", limit=1000))}
    tasks = state.list_tasks("stream", None, limit=1000)
    first_lease = min(t.started_at or 1e18 for t in tasks)
    # the split took over two seconds; the slots had leased tasks long before it ended
    assert events["dispatched"] - events["submitted"] > 2.0
    assert first_lease < events["dispatched"] - 1.0
    parts = sorted((tmp_path / ".shardflow" / "store" / "jobs" / "stream" / "tasks").iterdir())
    assert [p.name for p in parts] == [f"part-{n:06d}.json" for n in range(len(parts))]
    assert (
        sum(part_size(n) for n in range(len(parts) - 1))
        < 600
        <= sum(part_size(n) for n in range(len(parts)))
    )
