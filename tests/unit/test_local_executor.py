"""The local executor signals only its own slots: a handle whose pid was reused by an
unrelated process (or by another process of the same program, started later) is never
sent SIGTERM by ``cancel``, and ``poll`` does not count it as running."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardflow.executors.base import SlotSpec, SlotState
from shardflow.executors.local import LocalExecutor

# a stand-in for a worker: its command line names the worker module, as a slot's does
WORKER_LIKE = [sys.executable, "-c", "import time; time.sleep(60)", "shardflow.worker"]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def spawn(argv: list[str], started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    started.append(proc)
    return proc


def start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_cancel_does_not_signal_an_unrelated_process_that_reused_the_pid(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    stranger = spawn(["sleep", "60"], processes)
    # a handle recorded before the pid was reused (the old form, without a start time)
    LocalExecutor(tmp_path).cancel([f"local:{stranger.pid}"])
    assert stranger.poll() is None  # still running: not ours, not signalled
    assert LocalExecutor(tmp_path).poll([f"local:{stranger.pid}"]) == {
        f"local:{stranger.pid}": SlotState.DONE
    }


def test_cancel_checks_the_start_time_recorded_in_the_handle(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    later = spawn(WORKER_LIKE, processes)
    stale = f"local:{later.pid}:{start_time(later.pid) - 1}"  # same pid, another process
    LocalExecutor(tmp_path).cancel([stale])
    assert later.poll() is None
    assert LocalExecutor(tmp_path).poll([stale])[stale] == SlotState.DONE
    LocalExecutor(tmp_path).cancel([f"local:{later.pid}:{start_time(later.pid)}"])
    assert later.wait(timeout=30) == -signal.SIGTERM


def test_a_slot_handle_records_the_start_time_and_another_command_can_cancel_it(
    tmp_path: Path,
) -> None:
    starter = LocalExecutor(tmp_path)
    (handle,) = starter.start_slots(SlotSpec("job-1", "g001", 1, WORKER_LIKE))
    try:
        _, pid, started = handle.split(":")
        assert int(started) == start_time(int(pid))
        other = LocalExecutor(tmp_path)  # a later `shardflow cancel`: owns no process
        assert other.poll([handle]) == {handle: SlotState.RUNNING}
        other.cancel([handle])
        starter.wait(timeout=30)
        assert starter.poll([handle]) == {handle: SlotState.CANCELLED}
    finally:
        starter.cancel([handle])
        starter.wait(timeout=30)
