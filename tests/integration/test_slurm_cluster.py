"""The Slurm executor on a real single-node cluster (``scripts/slurm-dev start``).

Slots run a tiny Python program instead of the worker: it leaves a file per run
(``ran-<slot>-<restart count>``), one when it gets SIGTERM (``term-...``), and one when
it exits (``end-...``), so each test can see what Slurm really did.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from shardflow.executors.base import SlotSpec, SlotState
from shardflow.executors.slurm import SlurmExecutor, SlurmSettings
from shardflow.executors.slurm_commands import run_command
from shardflow.executors.slurm_render import SlurmResources
from tests.plugins import slurm as plugin
from tests.plugins.slurm import SlurmCluster, slurm, wait_for

pytestmark = pytest.mark.slurm

# the plugin's fixtures, for as long as tests/conftest.py does not list the plugin
slurm_cluster = plugin.slurm_cluster
slurm_job_id = plugin.slurm_job_id

SLOT = textwrap.dedent(
    """
    import os, signal, sys, time
    out, mode = sys.argv[1], sys.argv[2]
    slot = os.environ["SHARDFLOW_SLOT"]
    name = f"{slot}-{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    def touch(kind):
        open(os.path.join(out, f"{kind}-{name}"), "w").close()
    def on_term(signum, frame):
        touch("term")
        touch("end")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    touch("ran")
    if mode == "fail" and slot.endswith("_1"):
        touch("end")
        sys.exit(3)
    if mode == "slow":
        time.sleep(2)
    if mode == "hang" or (mode == "hang-once" and name.endswith("-0")):
        for _ in range(1200):
            time.sleep(0.1)
    touch("end")
    """
)
RESOURCES = SlurmResources(cpus=1, memory_mb=100, time_minutes=5)


def executor(tmp_path: Path, **settings: object) -> SlurmExecutor:
    settings.setdefault("resources", RESOURCES)
    return SlurmExecutor(tmp_path / "ws", SlurmSettings(workdir=str(tmp_path), **settings))  # type: ignore[arg-type]


def start(ex: SlurmExecutor, job_id: str, out: Path, count: int, mode: str = "ok") -> list[str]:
    out.mkdir(exist_ok=True)
    argv = [sys.executable, "-c", SLOT, str(out), mode]
    return ex.start_slots(SlotSpec(job_id, "g001", count, argv))


def files(out: Path, kind: str) -> set[str]:
    return {p.name.removeprefix(f"{kind}-") for p in out.glob(f"{kind}-*")}


def settled(ex: SlurmExecutor, handles: Sequence[str]) -> dict[str, SlotState]:
    """Poll until no handle is active; return the final states."""
    states: dict[str, SlotState] = {}

    def done() -> bool:
        states.update(ex.poll(handles))
        return not any(s.is_active for s in states.values())

    wait_for(done, f"{handles} to end")
    return states


def test_an_array_runs_every_slot_and_poll_reports_done(tmp_path: Path, slurm_job_id: str) -> None:
    ex, out = executor(tmp_path), tmp_path / "out"
    handles = start(ex, slurm_job_id, out, 6)
    assert len(handles) == 1
    [array] = handles
    expected = {f"{array}_{i}-0" for i in range(6)}
    wait_for(lambda: files(out, "end") == expected, "six slots to run")
    assert settled(ex, handles) == {array: SlotState.DONE}
    assert ex.slot_states(handles) == {f"{array}_{i}": SlotState.DONE for i in range(6)}
    logs = {p.name for p in (tmp_path / "ws/logs" / slurm_job_id).iterdir()}
    assert logs == {f"slurm-{array}_{i}.out" for i in range(6)}


def test_slots_above_max_array_size_run_as_several_arrays(
    tmp_path: Path, slurm_job_id: str
) -> None:
    ex, out = executor(tmp_path, max_array_size=4), tmp_path / "out"
    handles = start(ex, slurm_job_id, out, 6)
    assert len(handles) == 2
    expected = {f"{handles[0]}_{i}-0" for i in range(4)} | {f"{handles[1]}_{i}-0" for i in range(2)}
    wait_for(lambda: files(out, "end") == expected, "six slots in two arrays to run")
    assert settled(ex, handles) == dict.fromkeys(handles, SlotState.DONE)


def test_arrays_fill_the_clusters_real_max_array_size(
    tmp_path: Path, slurm_cluster: SlurmCluster, slurm_job_id: str
) -> None:
    ex = executor(tmp_path)
    size = ex.max_array_size()
    assert size == slurm_cluster.max_array_size  # read from scontrol show config
    plan = ex.plan_slots(SlotSpec(slurm_job_id, "g001", size + 1, ["true"]))
    [(first, text), (_, rest)] = plan
    assert f"#SBATCH --array=0-{size - 1}\n" in text
    assert "#SBATCH --array=0-0\n" in rest
    # --test-only: slurmctld checks the job but keeps no record. (Cancelling a real array
    # of MaxArraySize elements leaves that many records until MinJobAge: MaxJobCount.)
    first.parent.mkdir(parents=True)
    first.write_text(text)
    accepted = slurm("sbatch", "--test-only", str(first))
    assert accepted.returncode == 0, accepted.stderr
    refused = slurm("sbatch", "--test-only", f"--array=0-{size}", str(first))
    assert refused.returncode != 0
    assert "Invalid job array specification" in refused.stderr


def test_sigterm_to_the_batch_shell_reaches_the_worker(tmp_path: Path, slurm_job_id: str) -> None:
    ex, out = executor(tmp_path), tmp_path / "out"
    [array] = start(ex, slurm_job_id, out, 1, "hang")
    wait_for(lambda: files(out, "ran") == {f"{array}_0-0"}, "the slot to start")
    # what --signal=B:TERM@grace does before the time limit: signal the batch shell only
    assert slurm("scancel", "--batch", "--signal=TERM", f"{array}_0").returncode == 0
    wait_for(lambda: files(out, "term") == {f"{array}_0-0"}, "the worker to get SIGTERM")
    # the worker exited 0 after its checkpoint, and the script passed its status on
    assert settled(ex, [array]) == {array: SlotState.DONE}


def test_a_requeued_slot_gets_sigterm_and_runs_again(tmp_path: Path, slurm_job_id: str) -> None:
    ex, out = executor(tmp_path), tmp_path / "out"
    [array] = start(ex, slurm_job_id, out, 1, "hang-once")
    element = f"{array}_0"
    wait_for(lambda: files(out, "ran") == {f"{element}-0"}, "the slot to start")
    assert slurm("scontrol", "requeue", element).returncode == 0
    wait_for(lambda: f"{element}-0" in files(out, "term"), "the worker to get SIGTERM")

    # A requeued job waits for BeginTime (about 2 minutes) so that slurmd has dropped the
    # old run's credential: make it eligible in 2 s. (Starting it in the same second as the
    # requeue gets it killed with "Job credential revoked".)
    moved: list[bool] = []

    def rerun() -> bool:
        queued = slurm("squeue", "-h", "-j", element, "-o", "%T").stdout.strip()
        if not moved and queued == "PENDING":
            update = slurm("scontrol", "update", f"JobId={element}", "StartTime=now+2")
            moved.append(update.returncode == 0)
        return f"{element}-1" in files(out, "end")

    wait_for(rerun, "the requeued slot to run again")
    assert settled(ex, [array]) == {array: SlotState.DONE}


def test_cancel_leaves_no_running_jobs(tmp_path: Path, slurm_job_id: str) -> None:
    ex, out = executor(tmp_path), tmp_path / "out"
    [array] = start(ex, slurm_job_id, out, 3, "hang")
    wait_for(lambda: len(files(out, "ran")) == 3, "three slots to start")
    ex.cancel([array])
    wait_for(lambda: not slurm("squeue", "-h", "-j", array).stdout.strip(), "squeue to empty")
    assert settled(ex, [array]) == {array: SlotState.CANCELLED}
    ex.cancel([array])  # again: harmless


def test_the_followup_runs_after_the_whole_array(tmp_path: Path, slurm_job_id: str) -> None:
    ex, out = executor(tmp_path), tmp_path / "out"
    handles = start(ex, slurm_job_id, out, 3, "slow")
    count_ends = (
        "import pathlib, sys; out = pathlib.Path(sys.argv[1]); "
        "(out / 'followup').write_text(str(len(list(out.glob('end-*')))))"
    )
    followup = ex.submit_followup(
        slurm_job_id, [sys.executable, "-c", count_ends, str(out)], handles
    )
    wait_for(lambda: (out / "followup").exists(), "the follow-up job to run")
    assert (out / "followup").read_text() == "3"
    assert settled(ex, [followup]) == {followup: SlotState.DONE}


def test_a_failing_slot_is_reported_failed_also_from_records(
    tmp_path: Path, slurm_cluster: SlurmCluster, slurm_job_id: str
) -> None:
    ex, out = executor(tmp_path), tmp_path / "out"
    [array] = start(ex, slurm_job_id, out, 3, "fail")
    assert settled(ex, [array]) == {array: SlotState.FAILED}
    expected = {
        f"{array}_0": SlotState.DONE,
        f"{array}_1": SlotState.FAILED,
        f"{array}_2": SlotState.DONE,
    }
    assert ex.slot_states([array]) == expected

    # once slurmctld forgets the job (MinJobAge), the state comes from sacct or jobcomp
    def forgetful(argv: Sequence[str]) -> tuple[int, str, str]:
        if argv[0] == "squeue":
            return 1, "", "slurm_load_jobs error: Invalid job id specified"
        return run_command(argv)

    records = SlurmExecutor(tmp_path / "ws", SlurmSettings(), runner=forgetful)
    # sacct records may arrive a few seconds late
    wait_for(lambda: records.slot_states([array]) == expected, "the records of the array")
    assert records.poll([array]) == {array: SlotState.FAILED}
