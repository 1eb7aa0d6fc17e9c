"""Every key docs/slurm.md shows is accepted by the job config and reaches the Slurm
settings: the documented example block is loaded as a user would write it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shardflow.config import load_job_config
from shardflow.errors import ConfigError
from shardflow.executors.slurm_settings import settings_from_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "slurm.md"


def documented_keys() -> str:
    section = DOC.read_text(encoding="utf-8").split("## Config keys", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None, "docs/slurm.md lost its example config block"
    return block.group(1)


def write_job(folder: Path, body: str) -> Path:
    (folder / "h.py").write_text("def h(r, ctx):\n    return r\n", encoding="utf-8")
    (folder / "in.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(f"name: s\nhandler: h.py:h\ninput: {{path: in.jsonl}}\n{body}", "utf-8")
    return job


def test_the_documented_slurm_keys_load_and_reach_the_settings(tmp_path: Path) -> None:
    loaded = load_job_config(write_job(tmp_path, documented_keys()), env={}, cwd=tmp_path)
    s = settings_from_config(loaded.config)
    assert (s.resources.cpus, s.resources.memory_mb, s.resources.time_minutes) == (1, 2048, 60)
    assert (s.resources.partition, s.resources.account, s.resources.qos) == (
        "batch",
        "proj-42",
        "normal",
    )
    assert s.resources.extra_lines == ("--constraint=skylake", "#SBATCH --exclusive")
    assert s.setup_lines == ("module load python/3.11",)
    assert s.python == "/home/ana/venvs/sf/bin/python"
    assert s.log_pattern == "{workspace}/logs/{job_id}/slurm-%A_%a.out"
    assert (s.signal_grace_s, s.requeue, s.array_throttle) == (60, True, 32)
    assert (s.max_array_size, s.workdir) == (None, None)
    assert (s.submit_rate, s.sbatch_retries) == (2.0, 5)
    # the reconcile job: its own size, the slots' partition and sbatch lines
    f = s.followup_resources
    assert (f.cpus, f.memory_mb, f.time_minutes, f.partition) == (1, 1024, 15, "batch")
    assert f.extra_lines == s.resources.extra_lines


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("resources: {memory: '4096'}", "resources.memory"),  # bytes, not MB
        ("resources: {memory: 2G}", "resources.memory"),  # ambiguous: GB or GiB?
        ("slurm: {signal_grace: 0}", "slurm.signal_grace"),
        ("slurm: {submit_rate: 0}", "slurm.submit_rate"),
        ("slurm: {reconcile: {cpu: 2}}", "slurm.reconcile.cpu"),
        ("slurm: {reconcile: {memory: 4096}}", "slurm.reconcile.memory"),
    ],
)
def test_slurm_values_sbatch_would_misread_are_config_errors(
    tmp_path: Path, body: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_job_config(write_job(tmp_path, body + "\n"), env={}, cwd=tmp_path)
    assert any(p.field == field for p in info.value.problems), info.value
    assert "job.yaml:4" in str(info.value)
