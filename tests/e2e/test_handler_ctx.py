"""The handler's ``ctx`` through a real ``shardflow run``, in the slot and with
``worker.isolation: true``: a class handler's setup and teardown get the slot's ctx (the
job and slot, no task), and each item sees its own task and attempt."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import run_json, write_job

HANDLER = """
import json, os


class Tagger:
    def setup(self, ctx):
        self.started = f"{ctx.job_id}@{ctx.slot}#{ctx.task_id or '-'}"
        ctx.logger.info("setup in %s", self.started)

    def process(self, record, ctx):
        ctx.metric("tagged", 1)
        return {"id": record["id"], "setup": self.started, "task": ctx.task_id,
                "attempt": ctx.attempt, "slot": ctx.slot, "stop": ctx.should_stop()}

    def teardown(self, ctx):
        with open(os.path.join(os.path.dirname(__file__), f"teardown-{os.getpid()}"), "w") as f:
            json.dump([ctx.job_id, ctx.slot, ctx.task_id], f)
"""


@pytest.mark.parametrize("isolation", [False, True], ids=["in-process", "isolated"])
def test_a_class_handler_gets_the_slot_ctx_in_setup_and_the_task_ctx_per_item(
    tmp_path: Path, isolation: bool
) -> None:
    (tmp_path / "tagger.py").write_text(HANDLER, encoding="utf-8")
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"id": "r{i:03d}"}}\n' for i in range(60)), encoding="utf-8")
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: ctx-test
handler: tagger.py:Tagger
input: {{path: {data}, id_field: id}}
batching: {{records: 20}}
resources: {{slots: 2}}
worker: {{isolation: {str(isolation).lower()}}}
""",
    )
    summary = run_json(["run", str(job), "--job-id", "cx"], tmp_path, check=0)
    assert summary["status"] == "SUCCEEDED"

    rows = pq.read_table(tmp_path / ".shardflow/store/jobs/cx/output/results.parquet").to_pylist()
    assert len(rows) == 60
    for row in rows:
        job_id, rest = row["setup"].split("@")
        slot, task = rest.split("#")
        assert (job_id, task) == ("cx", "-")  # setup: the job and slot, no task
        assert slot == row["slot"]  # the slot that ran the item is the one set up
        assert (row["task"][0], row["attempt"]) == ("t", 1)
        assert row["stop"] is False
    assert len({r["task"] for r in rows}) == 3
    teardowns = sorted(tmp_path.glob("teardown-*"))
    assert teardowns  # every slot (or isolated child) that set up tore down
    assert all(p.read_text().startswith('["cx", "') for p in teardowns)


@pytest.mark.parametrize("isolation", [False, True], ids=["in-process", "isolated"])
def test_a_setup_that_always_fails_fails_the_job_with_its_error(
    tmp_path: Path, isolation: bool
) -> None:
    (tmp_path / "broken.py").write_text(
        "class Model:\n"
        "    def setup(self, ctx):\n"
        "        raise RuntimeError('model file missing: /models/x.bin')\n"
        "    def process(self, record, ctx):\n"
        "        return record\n",
        encoding="utf-8",
    )
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"id": "r{i:03d}"}}\n' for i in range(40)), encoding="utf-8")
    job = write_job(
        tmp_path / "job.yaml",
        f"name: broken\nhandler: broken.py:Model\ninput: {{path: {data}}}\n"
        "batching: {records: 10}\nresources: {slots: 2}\n"
        f"worker: {{isolation: {str(isolation).lower()}}}\n",
    )
    # not a loop of slots that start, fail and are replaced: the job fails, saying why
    summary = run_json(["run", str(job), "--job-id", "bk"], tmp_path, check=1, timeout=120)
    assert summary["status"] == "FAILED"
    assert "the handler's setup failed" in summary["message"]
    assert "RuntimeError: model file missing: /models/x.bin" in summary["message"]
    assert summary["items"]["succeeded"] == 0
