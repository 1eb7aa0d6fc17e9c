"""The workspace is the user's alone: run under the usual umask 022, a job leaves every
folder under ``.shardflow/`` 0700 and every file 0600 (state, queue, logs, results,
manifests), and its checkpoints in scratch the same."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import run_json, write_job

HANDLER = """
import time


def process(record, ctx):
    ctx.logger.info("item %s", record["id"])
    time.sleep(0.002)  # long enough for a checkpoint at every chunk
    return {"id": record["id"]}
"""


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def exposed(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) that group or others can read or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.S_IMODE(mode):o}")
    return found


def test_a_job_leaves_its_workspace_and_scratch_private(tmp_path: Path, usual_umask: None) -> None:
    (tmp_path / "handler.py").write_text(HANDLER, encoding="utf-8")
    (tmp_path / "in.jsonl").write_text(
        "".join(f'{{"id": {i}}}\n' for i in range(200)), encoding="utf-8"
    )
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: private
handler: handler.py:process
input: {{path: in.jsonl}}
batching: {{records: 50}}
worker: {{scratch: {tmp_path / "scratch"}, checkpoint_every: 16}}
""",
    )
    summary = run_json(["run", str(job), "--job-id", "private"], tmp_path)
    assert summary["status"] == "SUCCEEDED"
    workspace = tmp_path / ".shardflow"
    assert (workspace / "state.db").exists()
    assert exposed(workspace) == []
    assert exposed(tmp_path / "scratch") == []
