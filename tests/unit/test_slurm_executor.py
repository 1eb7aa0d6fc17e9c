"""SlurmExecutor against a scripted fake of the Slurm commands (no cluster, no real time).

The same behaviours run on a real cluster in tests/integration/test_slurm_cluster.py;
here the fake lets us provoke what a real controller does only when it is in trouble.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from shardflow.errors import ConfigError, InvalidIdError
from shardflow.executors.base import Executor, SlotSpec, SlotState
from shardflow.executors.slurm import (
    SlurmError,
    SlurmExecutor,
    SlurmSettings,
    slurm_executor_from_config,
)
from shardflow.executors.slurm_render import SlurmResources
from shardflow.executors.slurm_settings import memory_mb, settings_from_config, time_minutes
from shardflow.executors.slurm_track import (
    aggregate_state,
    map_state,
    parse_jobcomp,
    parse_sacct,
    parse_squeue,
)

TIMEOUT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
UNKNOWN = "slurm_load_jobs error: Invalid job id specified"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeSlurm:
    """Answers sbatch/squeue/sacct/scancel/scontrol like a small cluster would."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[list[str]] = []
        self.submit_times: list[float] = []
        self.config = {
            "MaxArraySize": "1001",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": "/nonexistent/jobcomp.txt",
        }
        self.next_id = 100
        self.comments: dict[str, str] = {}
        self.squeue_lines: list[str] = []
        self.sacct_lines: list[str] = []
        # (program, rc, stderr, job got through anyway)
        self.failures: list[tuple[str, int, str, bool]] = []
        self.let_through = 0  # successful calls before the failures start
        self.attempt_times: list[float] = []
        self.suffix = ""

    def fail(
        self, program: str, stderr: str, *, times: int = 1, rc: int = 1, through: bool = False
    ) -> None:
        self.failures += [(program, rc, stderr, through)] * times

    def __call__(self, argv: Sequence[str]) -> tuple[int, str, str]:
        argv = list(argv)
        self.calls.append(argv)
        program = argv[0]
        if program == "sbatch":
            self.attempt_times.append(self.clock.now)
        for i, (name, rc, err, through) in enumerate(self.failures):
            if name == program and not (program == "squeue" and "--name" in argv):
                if self.let_through:
                    self.let_through -= 1
                    break
                del self.failures[i]
                if through:
                    self._submit(argv)
                return rc, "", err
        if program == "scontrol":
            return 0, "".join(f"{k:<24}= {v}\n" for k, v in self.config.items()), ""
        if program == "sbatch":
            return 0, f"{self._submit(argv)}{self.suffix}\n", ""
        if program == "squeue" and "--name" in argv:
            return 0, "".join(f"{job} {c}\n" for job, c in self.comments.items()), ""
        if program == "squeue":
            wanted = set(argv[argv.index("-j") + 1].split(","))
            lines = [ln for ln in self.squeue_lines if ln.split("_")[0].split()[0] in wanted]
            return (0, "\n".join(lines), "") if lines else (1, "", UNKNOWN)
        if program == "sacct":
            return 0, "\n".join(self.sacct_lines), ""
        if program == "scancel":
            return 0, "", ""
        raise AssertionError(f"unexpected command {argv}")

    def _submit(self, argv: list[str]) -> str:
        self.next_id += 1
        self.submit_times.append(self.clock.now)
        comment = next(a for a in argv if a.startswith("--comment="))
        self.comments[str(self.next_id)] = comment.split("=", 1)[1]
        return str(self.next_id)

    def commands(self, program: str) -> list[list[str]]:
        return [c for c in self.calls if c[0] == program]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def slurm(clock: FakeClock) -> FakeSlurm:
    return FakeSlurm(clock)


def make(tmp_path: Path, slurm: FakeSlurm, clock: FakeClock, **settings: object) -> SlurmExecutor:
    return SlurmExecutor(
        tmp_path / "ws",
        SlurmSettings(workdir="/work", **settings),  # type: ignore[arg-type]
        runner=slurm,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
    )


def spec(count: int) -> SlotSpec:
    return SlotSpec("job-1", "g001", count, ["python", "-m", "shardflow.worker"], {"A": "1"})


def arrays_of(tmp_path: Path, handles_count: int) -> list[str]:
    scripts = [tmp_path / "ws/slurm/job-1" / f"g001-{k}.sbatch" for k in range(handles_count)]
    return [
        next(ln for ln in p.read_text().splitlines() if ln.startswith("#SBATCH --array"))
        for p in scripts
    ]


def test_the_executor_meets_the_protocol(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    assert isinstance(make(tmp_path, slurm, clock), Executor)


def test_slots_above_max_array_size_are_split_into_several_arrays(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    handles = make(tmp_path, slurm, clock).start_slots(spec(2500))
    assert handles == ["101", "102", "103"]
    assert arrays_of(tmp_path, 3) == [
        "#SBATCH --array=0-1000",
        "#SBATCH --array=0-1000",
        "#SBATCH --array=0-497",
    ]
    assert (tmp_path / "ws/logs/job-1").is_dir()  # Slurm would not create it


def test_max_array_size_override_and_throttle_shared_among_arrays(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    executor = make(tmp_path, slurm, clock, max_array_size=4, array_throttle=5)
    assert executor.start_slots(spec(10)) == ["101", "102", "103"]
    assert arrays_of(tmp_path, 3) == [
        "#SBATCH --array=0-3%2",
        "#SBATCH --array=0-3%2",
        "#SBATCH --array=0-1%1",
    ]
    assert not slurm.commands("scontrol")  # the override needs no question to slurmctld


def test_a_throttle_no_smaller_than_the_array_is_left_out(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    make(tmp_path, slurm, clock, array_throttle=64).start_slots(spec(64))
    assert arrays_of(tmp_path, 1) == ["#SBATCH --array=0-63"]


def test_submissions_are_spaced_by_the_submit_rate(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    make(tmp_path, slurm, clock, max_array_size=1, submit_rate=2.0).start_slots(spec(4))
    gaps = [b - a for a, b in zip(slurm.submit_times, slurm.submit_times[1:], strict=False)]
    assert gaps == [0.5, 0.5, 0.5]


def test_transient_sbatch_errors_are_retried_with_backoff(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.fail("sbatch", TIMEOUT, times=2)
    slurm.fail("sbatch", "sbatch: error: Slurm temporarily unable to accept job")
    assert make(tmp_path, slurm, clock).start_slots(spec(3)) == ["101"]
    assert len(slurm.commands("sbatch")) == 4
    # every retry waits its backoff, and still no faster than the submit rate allows
    gaps = [b - a for a, b in zip(slurm.attempt_times, slurm.attempt_times[1:], strict=False)]
    assert all(gap >= 0.5 for gap in gaps)
    assert clock.now - 1000.0 < 1 + 2 + 4 + 3 * 0.5


def test_a_timed_out_sbatch_that_got_through_is_not_submitted_again(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.fail("sbatch", TIMEOUT, through=True)
    assert make(tmp_path, slurm, clock).start_slots(spec(3)) == ["101"]
    assert len(slurm.commands("sbatch")) == 1


def test_a_permanent_sbatch_error_fails_at_once(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.fail("sbatch", "sbatch: error: invalid partition specified: nope")
    with pytest.raises(SlurmError, match="invalid partition"):
        make(tmp_path, slurm, clock).start_slots(spec(3))
    assert len(slurm.commands("sbatch")) == 1


def test_retries_are_capped(tmp_path: Path, slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.fail("sbatch", TIMEOUT, times=10)
    with pytest.raises(SlurmError, match="Socket timed out"):
        make(tmp_path, slurm, clock, sbatch_retries=2).start_slots(spec(1))
    assert len(slurm.commands("sbatch")) == 3


def test_a_failed_second_array_cancels_the_first(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    executor = make(tmp_path, slurm, clock, max_array_size=2)
    slurm.fail("sbatch", "sbatch: error: QOSMaxSubmitJobPerUserLimit")
    slurm.let_through = 1
    with pytest.raises(SlurmError, match="QOSMaxSubmitJobPerUserLimit"):
        executor.start_slots(spec(3))
    assert slurm.commands("scancel") == [["scancel", "101"]]


def test_a_cluster_suffix_is_stripped_from_the_job_id(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.suffix = ";cluster-a"
    assert make(tmp_path, slurm, clock).start_slots(spec(1)) == ["101"]


def test_followup_depends_on_the_arrays(tmp_path: Path, slurm: FakeSlurm, clock: FakeClock) -> None:
    executor = make(tmp_path, slurm, clock)
    job = executor.submit_followup("job-1", ["python", "-m", "x"], ["101", "102;c"])
    assert job == "101"
    script = (tmp_path / "ws/slurm/job-1/reconcile-101.sbatch").read_text()
    assert "#SBATCH --dependency=afterany:101:102\n" in script
    assert "#SBATCH --time=00:15:00\n" in script


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["101_[2-5%2] PENDING", "101_0 RUNNING", "101_1 COMPLETED"], SlotState.RUNNING),
        (["101_[0-5] PENDING"], SlotState.PENDING),
        (["101_0 COMPLETED", "101_1 COMPLETED"], SlotState.DONE),
        (["101_0 COMPLETED", "101_1 FAILED", "101_2 CANCELLED"], SlotState.FAILED),
        (["101_0 COMPLETED", "101_1 CANCELLED"], SlotState.CANCELLED),
        (["101_0 REQUEUED", "101_1 COMPLETED"], SlotState.PENDING),
        (["101 COMPLETING"], SlotState.RUNNING),
    ],
)
def test_poll_aggregates_the_elements_of_an_array(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock, lines: list[str], expected: SlotState
) -> None:
    slurm.squeue_lines = lines
    assert make(tmp_path, slurm, clock).poll(["101"]) == {"101": expected}


JOBCOMP = [
    "JobId=101 UserId=root(0) Name=sf-job-1-g001 JobState=COMPLETED ArrayJobId=101 "
    "ArrayTaskId=2 ExitCode=0:0",
    "JobId=102 UserId=root(0) Name=sf-job-1-g001 JobState=FAILED ArrayJobId=101 "
    "ArrayTaskId=0 ExitCode=3:0",
    "JobId=104 UserId=root(0) Name=wrap JobState=COMPLETED ExitCode=0:0",
    "JobId=103 UserId=root(0) Name=sf-job-1-g001 JobState=COMPLETED ArrayJobId=101 "
    "ArrayTaskId=1 ExitCode=0:0",
    "JobId=109 UserId=root(0) Name=other JobState=FAILED ArrayJobId=108 ArrayTaskId=0",
]


def test_poll_reads_the_jobcomp_file_for_jobs_slurmctld_forgot(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    jobcomp = tmp_path / "jobcomp.txt"
    jobcomp.write_text("\n".join(JOBCOMP) + "\n")
    slurm.config["JobCompLoc"] = str(jobcomp)
    slurm.squeue_lines = ["101_2 COMPLETED"]  # 0 and 1 ended more than MinJobAge ago
    executor = make(tmp_path, slurm, clock)
    assert executor.poll(["101", "104", "105"]) == {
        "101": SlotState.FAILED,
        "104": SlotState.DONE,
        "105": SlotState.DONE,  # known nowhere: ended long ago
    }
    assert executor.slot_states(["101"]) == {
        "101_0": SlotState.FAILED,
        "101_1": SlotState.DONE,
        "101_2": SlotState.DONE,
    }


def test_poll_uses_sacct_when_accounting_is_on(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.config["AccountingStorageType"] = "accounting_storage/slurmdbd"
    slurm.sacct_lines = [
        "101_0|COMPLETED|0:0",
        "101_1|CANCELLED by 0|0:15",
        "101_1.batch|CANCELLED|0:15",
    ]
    assert make(tmp_path, slurm, clock).poll(["101"]) == {"101": SlotState.CANCELLED}


def test_a_bare_array_id_from_lagging_sacct_does_not_count_as_a_slot(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.config["AccountingStorageType"] = "accounting_storage/slurmdbd"
    slurm.sacct_lines = ["101|COMPLETED|0:0", "101_0|COMPLETED|0:0", "101_1|FAILED|3:0"]
    executor = make(tmp_path, slurm, clock)
    assert executor.slot_states(["101"]) == {"101_0": SlotState.DONE, "101_1": SlotState.FAILED}


def test_poll_says_unknown_while_slurmctld_does_not_answer(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    slurm.fail("squeue", "squeue: error: Unable to contact slurm controller", times=3)
    states = make(tmp_path, slurm, clock, sbatch_retries=2).poll(["101"])
    assert states == {"101": SlotState.UNKNOWN}
    assert states["101"].is_active


def test_cancel_is_idempotent_and_refuses_anything_but_job_ids(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    executor = make(tmp_path, slurm, clock)
    executor.cancel(["101", "102"])
    executor.cancel(["101", "102"])
    assert slurm.commands("scancel") == [["scancel", "101", "102"]] * 2
    with pytest.raises(InvalidIdError):
        executor.cancel(["--user=root"])
    with pytest.raises(InvalidIdError):
        executor.poll(["local:123"])


def test_dry_run_plans_without_writing_or_submitting(
    tmp_path: Path, slurm: FakeSlurm, clock: FakeClock
) -> None:
    [(path, text)] = make(tmp_path, slurm, clock).plan_slots(spec(3))
    assert path == tmp_path / "ws/slurm/job-1/g001-0.sbatch"
    assert "#SBATCH --array=0-2\n" in text
    assert not path.exists()
    assert not slurm.commands("sbatch")


# ---- parsing and mapping ------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("PENDING", SlotState.PENDING),
        ("REQUEUED", SlotState.PENDING),
        ("CONFIGURING", SlotState.PENDING),
        ("RUNNING", SlotState.RUNNING),
        ("COMPLETING", SlotState.RUNNING),
        ("SUSPENDED", SlotState.RUNNING),
        ("COMPLETED", SlotState.DONE),
        ("FAILED", SlotState.FAILED),
        ("TIMEOUT", SlotState.FAILED),
        ("OUT_OF_MEMORY", SlotState.FAILED),
        ("NODE_FAIL", SlotState.FAILED),
        ("BOOT_FAIL", SlotState.FAILED),
        ("DEADLINE", SlotState.FAILED),
        ("PREEMPTED", SlotState.FAILED),
        ("CANCELLED", SlotState.CANCELLED),
        ("CANCELLED by 0", SlotState.CANCELLED),
        ("CANCELLED+", SlotState.CANCELLED),
        ("WEIRD", SlotState.UNKNOWN),
    ],
)
def test_slurm_states_map_onto_slot_states(state: str, expected: SlotState) -> None:
    assert map_state(state) == expected


def test_parsers_read_elements_ranges_and_skip_steps() -> None:
    squeue = parse_squeue("7_[1,3,5-6%2] PENDING\n7_0 RUNNING\n8 COMPLETED\n9+0 RUNNING\n")
    assert [(r.job, r.indices, r.state) for r in squeue] == [
        ("7", (1, 3, 5, 6), SlotState.PENDING),
        ("7", (0,), SlotState.RUNNING),
        ("8", None, SlotState.DONE),
    ]
    sacct = parse_sacct("7_0|COMPLETED|0:0\n7_0.batch|COMPLETED|0:0\n7_[1-2]|PENDING|0:0\n")
    assert [r.element_keys() for r in sacct] == [["7_0"], ["7_1", "7_2"]]
    jobcomp = parse_jobcomp(JOBCOMP, ["101"])
    assert [(r.element_keys(), r.state) for r in jobcomp] == [
        (["101_2"], SlotState.DONE),
        (["101_0"], SlotState.FAILED),
        (["101_1"], SlotState.DONE),
    ]


def test_aggregate_of_nothing_is_unknown() -> None:
    assert aggregate_state({}) == SlotState.UNKNOWN


# ---- settings from a job config ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mb"),
    [(2 * 2**30, 2048), ("2GiB", 2048), ("512M", 512), ("1.5G", 1536), ("300", 300)],
)
def test_memory_from_config(value: object, mb: int) -> None:
    assert memory_mb(value) == mb


@pytest.mark.parametrize(
    ("value", "minutes"), [(3600, 60), (61.0, 2), ("90m", 90), ("2h", 120), ("1d", 1440)]
)
def test_time_from_config(value: object, minutes: int) -> None:
    assert time_minutes(value) == minutes


def test_settings_from_a_config_shaped_object() -> None:
    cfg = {
        "resources": {"cpus": 2, "memory": "4GiB", "time": "2h", "partition": "batch", "qos": "hi"},
        "slurm": {
            "sbatch": ["--constraint=intel"],
            "setup": ["module load python"],
            "signal_grace": "90s",
            "array_throttle": 8,
            "reconcile": {"time": "5m"},
        },
    }
    settings = settings_from_config(cfg)
    assert settings.resources == SlurmResources(
        cpus=2,
        memory_mb=4096,
        time_minutes=120,
        partition="batch",
        qos="hi",
        extra_lines=("--constraint=intel",),
    )
    assert settings.followup_resources.partition == "batch"
    assert settings.followup_resources.time_minutes == 5
    assert settings.signal_grace_s == 90
    assert settings.array_throttle == 8
    assert settings.setup_lines == ("module load python",)
    assert settings_from_config(None) == SlurmSettings()


def test_invalid_slurm_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="extra sbatch line"):
        slurm_executor_from_config({"slurm": {"sbatch": ["rm -rf /"]}}, tmp_path)
    with pytest.raises(ConfigError, match="memory"):
        slurm_executor_from_config({"resources": {"memory": "lots"}}, tmp_path)
