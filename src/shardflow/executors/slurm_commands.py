"""Talking to slurmctld: running Slurm commands with retries, backoff and a submit rate.

A busy controller answers "Socket timed out" or "Slurm temporarily unable to accept
job"; those errors are retried with exponential backoff and full jitter. ``sbatch``
calls are spaced by a minimum interval, and a submission that timed out is looked up
by a token in its comment before it is retried, so an array is never submitted twice.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import InvalidIdError, ShardflowError

log = logging.getLogger("shardflow.executors.slurm")

Runner = Callable[[Sequence[str]], tuple[int, str, str]]
"""Runs a command; returns (exit code, stdout, stderr). Tests inject fakes."""

TRANSIENT_ERRORS = (
    "Socket timed out",
    "Slurm temporarily unable",
    "Resource temporarily unavailable",
    "Unable to contact slurm controller",
    "send/recv",
    "command timed out",
)
_HANDLE = re.compile(r"^[0-9]+$")


class SlurmError(ShardflowError):
    """A Slurm command failed for good (after retries on transient errors)."""


def run_command(argv: Sequence[str], timeout: float = 60.0) -> tuple[int, str, str]:
    """Run ``argv``; a timeout comes back as exit 124 with ``command timed out``.

    Raises SlurmError when the program is not installed.
    """
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: command timed out after {timeout:g}s"
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} not found: is Slurm installed on this machine?") from exc
    return done.returncode, done.stdout, done.stderr


def cluster_available(runner: Runner | None = None) -> bool:
    """True when ``sinfo`` answers (a controller is reachable), else False."""
    run = runner or (lambda argv: run_command(argv, timeout=10.0))
    try:
        rc, _, _ = run(["sinfo", "-h", "-o", "%a"])
    except SlurmError:
        return False
    return rc == 0


def is_transient(rc: int, text: str) -> bool:
    """True for a failed command whose output names a passing controller trouble."""
    return rc != 0 and any(pattern in text for pattern in TRANSIENT_ERRORS)


def check_handle(handle: str) -> str:
    """The plain job id of a handle (``123``, ``123;cluster``); raises InvalidIdError.

    Handles reach squeue/scancel argv, so nothing but digits may pass.
    """
    value = handle.strip().split(";", 1)[0]
    if not _HANDLE.fullmatch(value):
        raise InvalidIdError(f"invalid Slurm job id {handle!r}")
    return value


def parse_sbatch(out: str) -> str:
    """The job id from ``sbatch --parsable`` output; raises SlurmError if there is none."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    job = lines[-1].split(";", 1)[0] if lines else ""
    if not job.isdigit():
        raise SlurmError(f"sbatch --parsable printed {out.strip()!r}, not a job id")
    return job


class SlurmCommands:
    """Runs Slurm commands for one executor: retried, and sbatch rate-limited."""

    def __init__(
        self,
        runner: Runner,
        *,
        retries: int,
        submit_rate: float,
        backoff: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._runner = runner
        self._retries = retries
        self._interval = 1.0 / submit_rate
        self._backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._next_submit = float("-inf")

    def call(self, argv: Sequence[str]) -> tuple[int, str, str]:
        """Run ``argv``, retrying transient errors; return the last (rc, stdout, stderr)."""
        attempt = 1
        while True:
            rc, out, err = self._runner(argv)
            if not is_transient(rc, err + out) or attempt > self._retries:
                return rc, out, err
            self._pause(argv[0], attempt, err)
            attempt += 1

    def check(self, argv: Sequence[str]) -> str:
        """stdout of ``argv``; raises SlurmError when it fails (after retries)."""
        rc, out, err = self.call(argv)
        if rc != 0:
            raise SlurmError(f"{' '.join(argv)} failed (exit {rc}): {err.strip()}")
        return out

    def sbatch(self, script: Path, job_name: str) -> str:
        """Submit ``script``; return the job id. Raises SlurmError when it fails for good.

        Waits for its turn under ``submit_rate``. After a transient error the job is
        looked up by its comment token first: a timed-out sbatch may have got through.
        """
        comment = f"shardflow:{secrets.token_hex(8)}"
        argv = ["sbatch", "--parsable", f"--comment={comment}", str(script)]
        attempt = 1
        while True:
            self._wait_for_submit_turn()
            rc, out, err = self._runner(argv)
            if rc == 0:
                return parse_sbatch(out)
            if not is_transient(rc, err + out) or attempt > self._retries:
                raise SlurmError(f"sbatch {script} failed (exit {rc}): {err.strip()}")
            found = self._find_submitted(job_name, comment)
            if found is not None:
                return found
            self._pause("sbatch", attempt, err)
            attempt += 1

    def _find_submitted(self, job_name: str, comment: str) -> str | None:
        argv = ["squeue", "-h", "-t", "all", "--name", job_name, "-o", "%A %k"]
        rc, out, _ = self._runner(argv)
        if rc != 0:
            return None
        for line in out.splitlines():
            job, _, found = line.strip().partition(" ")
            if found.strip() == comment and job.isdigit():
                return job
        return None

    def _pause(self, program: str, attempt: int, err: str) -> None:
        delay = self._backoff.backoff(attempt, self._rng)
        reason = (err.strip().splitlines() or ["?"])[-1]
        log.warning(
            "%s: transient error (%s); retry %d of %d in %.1fs",
            program,
            reason,
            attempt,
            self._retries,
            delay,
        )
        self._sleep(delay)

    def _wait_for_submit_turn(self) -> None:
        wait = self._next_submit - self._clock()
        if wait > 0:
            self._sleep(wait)
        self._next_submit = max(self._clock(), self._next_submit) + self._interval
