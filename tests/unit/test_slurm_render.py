"""sbatch rendering: golden files, validation, and the slot script's signal forwarding.

Regenerate the golden files after an intended change with
``SHARDFLOW_UPDATE_GOLDEN=1 pytest tests/unit/test_slurm_render.py`` and review the diff.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from shardflow.errors import InvalidIdError
from shardflow.executors.slurm_render import (
    SlurmFollowupSpec,
    SlurmResources,
    SlurmSlotSpec,
    format_time,
    render_reconcile_script,
    render_slot_script,
    sbatch_line,
)

GOLDEN = Path(__file__).parent / "golden"
WORKER = ("/usr/bin/python3", "-m", "shardflow.worker", "--job", "job-1", "--workspace", "/ws")

MINIMAL_SLOT = SlurmSlotSpec(
    job_id="job-1",
    group_id="g001",
    last_index=5,
    command=WORKER,
    log_path="/ws/logs/job-1/slurm-%A_%a.out",
)
FULL_SLOT = SlurmSlotSpec(
    job_id="enrich-users-7f3a",
    group_id="g002",
    last_index=999,
    command=(
        "/login/venv/bin/python",
        "-m",
        "shardflow.worker",
        "--state",
        "dynamodb://sf?region=eu-west-1",
        "--job",
        "enrich-users-7f3a",
        "--workspace",
        "/scratch/my project/.shardflow",
    ),
    log_path="/scratch/my project/.shardflow/logs/enrich-users-7f3a/slurm-%A_%a.out",
    resources=SlurmResources(
        cpus=4,
        memory_mb=8192,
        time_minutes=36 * 60 + 30,
        partition="batch",
        account="proj-42",
        qos="normal",
        extra_lines=("--constraint=skylake", "#SBATCH --exclusive", "--mail-type=NONE"),
    ),
    throttle=50,
    signal_grace_s=120,
    requeue=False,
    python="/opt/site/venv/bin/python",
    setup_lines=("module load python/3.11", "source /opt/site/env.sh"),
    env={"SHARDFLOW_REGION": "eu-west-1", "GREETING": "it's $HOME; `rm -rf /`"},
    workdir="/scratch/my project",
)
MINIMAL_RECONCILE = SlurmFollowupSpec(
    job_id="job-1",
    command=("/usr/bin/python3", "-m", "shardflow.coordinator.reconcile", "--job", "job-1"),
    log_path="/ws/logs/job-1/slurm-reconcile-%j.out",
)
FULL_RECONCILE = SlurmFollowupSpec(
    job_id="enrich-users-7f3a",
    command=(
        "/login/venv/bin/python",
        "-m",
        "shardflow.coordinator.reconcile",
        "--state",
        "dynamodb://sf?region=eu-west-1",
        "--job",
        "enrich-users-7f3a",
    ),
    log_path="/scratch/p/.shardflow/logs/enrich-users-7f3a/slurm-reconcile-%j.out",
    after=("1234", "1235"),
    resources=SlurmResources(
        cpus=1, memory_mb=1024, time_minutes=15, partition="batch", account="proj-42"
    ),
    python="/opt/site/venv/bin/python",
    setup_lines=("module load python/3.11",),
    env={"SHARDFLOW_REGION": "eu-west-1"},
    workdir="/scratch/p",
)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("slot_minimal", lambda: render_slot_script(MINIMAL_SLOT)),
        ("slot_full", lambda: render_slot_script(FULL_SLOT)),
        ("reconcile_minimal", lambda: render_reconcile_script(MINIMAL_RECONCILE)),
        ("reconcile_full", lambda: render_reconcile_script(FULL_RECONCILE)),
    ],
)
def test_rendered_script_matches_golden_file(name: str, text: object) -> None:
    assert callable(text)
    rendered = text()
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("SHARDFLOW_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert rendered == golden.read_text()
    # and bash accepts it
    subprocess.run(["bash", "-n"], input=rendered, text=True, check=True)


def test_full_slot_script_quotes_every_value_from_config() -> None:
    script = render_slot_script(FULL_SLOT)
    assert "export GREETING='it'\"'\"'s $HOME; `rm -rf /`'" in script
    assert "'/scratch/my project/.shardflow' &" in script
    assert '#SBATCH --chdir="/scratch/my project"' in script
    assert script.count("/opt/site/venv/bin/python") == 1
    assert "/login/venv/bin/python" not in script


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (1, "00:01:00"),
        (90, "01:30:00"),
        (1439, "23:59:00"),
        (1440, "1-00:00:00"),
        (2190, "1-12:30:00"),
    ],
)
def test_format_time(minutes: int, expected: str) -> None:
    assert format_time(minutes) == expected


@pytest.mark.parametrize("minutes", [0, -5, True, 1.5])
def test_format_time_refuses_non_positive_or_non_int(minutes: object) -> None:
    with pytest.raises(ValueError, match="time limit"):
        format_time(minutes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("--gres=gpu:1", "#SBATCH --gres=gpu:1"),
        ("--exclusive", "#SBATCH --exclusive"),
        ("#SBATCH -C skylake", "#SBATCH -C skylake"),
        ("  #SBATCH --reservation=r1  ", "#SBATCH --reservation=r1"),
    ],
)
def test_extra_sbatch_lines_are_accepted_in_two_forms(line: str, expected: str) -> None:
    assert sbatch_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "--gres=gpu:1\nrm -rf /",
        "--mem=1G\r",
        "gres=gpu:1",
        "echo hi",
        "#SBATCH",
        "#SBATCH echo hi",
        "--array=0-99",
        "#SBATCH --dependency=afterok:1",
        "-p batch",
    ],
)
def test_extra_sbatch_lines_refuse_anything_else(line: str) -> None:
    with pytest.raises(ValueError, match="extra sbatch line"):
        sbatch_line(line)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job_id": "Bad/Id"}, "invalid job id"),
        ({"group_id": "../g"}, "invalid task group id"),
        ({"last_index": -1}, "array range"),
        ({"first_index": 3, "last_index": 2}, "array range"),
        ({"throttle": 0}, "throttle"),
        ({"signal_grace_s": 3600}, "signal grace"),
        ({"env": {"BAD-NAME": "x"}}, "environment variable name"),
        ({"env": {"SHARDFLOW_SLOT": "x"}}, "SHARDFLOW_SLOT"),
        ({"setup_lines": ("module load a\nmodule load b",)}, "setup line"),
        ({"command": ()}, "command is empty"),
        ({"log_path": 'a"b'}, "double quote"),
        ({"resources": SlurmResources(partition="batch; rm")}, "partition"),
        ({"resources": SlurmResources(cpus=0)}, "cpus"),
        ({"resources": SlurmResources(memory_mb=0)}, "memory"),
    ],
)
def test_slot_script_refuses_invalid_values(change: dict[str, object], message: str) -> None:
    values = {
        "job_id": "job-1",
        "group_id": "g001",
        "last_index": 5,
        "command": WORKER,
        "log_path": "/ws/logs/slurm-%A_%a.out",
    }
    values.update(change)
    with pytest.raises(ValueError, match=message):
        render_slot_script(SlurmSlotSpec(**values))  # type: ignore[arg-type]


def test_reconcile_script_refuses_a_dependency_that_is_not_a_job_id() -> None:
    spec = SlurmFollowupSpec(
        job_id="job-1", command=("true",), log_path="/ws/r.out", after=("12", "12:13")
    )
    with pytest.raises(ValueError, match="dependency"):
        render_reconcile_script(spec)


def test_invalid_job_id_raises_the_id_error() -> None:
    with pytest.raises(InvalidIdError):
        render_slot_script(
            SlurmSlotSpec(job_id="UP", group_id="g", last_index=0, command=("x",), log_path="/l")
        )


# ---- the slot script's body, run by bash without Slurm ------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    def on_term(signum, frame):
        with open(out + ".term", "w") as f:
            f.write(str(signum))
        sys.exit(int(sys.argv[2]))
    signal.signal(signal.SIGTERM, on_term)
    with open(out + ".slot", "w") as f:
        f.write(os.environ["SHARDFLOW_SLOT"])
    if sys.argv[3] == "wait":
        for _ in range(600):
            time.sleep(0.05)
    sys.exit(int(sys.argv[4]))
    """
)


def _run_slot_script(
    tmp_path: Path, mode: str, term_exit: int, normal_exit: int
) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / "child"
    spec = SlurmSlotSpec(
        job_id="job-1",
        group_id="g001",
        last_index=0,
        command=(sys.executable, "-c", CHILD, str(out), str(term_exit), mode, str(normal_exit)),
        log_path=str(tmp_path / "log"),
    )
    script = tmp_path / "slot.sbatch"
    script.write_text(render_slot_script(spec))
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": "3"}
    proc = subprocess.Popen(["bash", str(script)], env=env)
    return proc, out


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_slot_script_forwards_a_signal_as_term_and_exits_with_the_workers_status(
    tmp_path: Path, signum: signal.Signals
) -> None:
    proc, out = _run_slot_script(tmp_path, "wait", term_exit=7, normal_exit=0)
    _wait_for(out.with_suffix(".slot"))
    proc.send_signal(signum)  # what --signal=B:TERM does: only the batch shell is signalled
    assert proc.wait(timeout=20) == 7
    assert out.with_suffix(".term").read_text() == str(int(signal.SIGTERM))
    assert out.with_suffix(".slot").read_text() == "42_3"


def test_slot_script_exits_with_the_workers_own_status(tmp_path: Path) -> None:
    proc, out = _run_slot_script(tmp_path, "exit", term_exit=7, normal_exit=3)
    assert proc.wait(timeout=20) == 3
    assert not out.with_suffix(".term").exists()
