"""Local worker slots: child processes running the same entry point Slurm runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from shardflow.executors.base import SlotSpec, SlotState
from shardflow.layout import LocalPaths


class LocalExecutor:
    """Starts slots as processes of this machine; handles are ``local:<pid>:<start>``,
    ``start`` being the process's start time in clock ticks since boot (``/proc``).

    Slot output goes to ``{workspace}/logs/{job}/slot-{group}-{n}.log``. Processes are
    tracked by this object; a handle from another process (a later ``shardflow``
    command) is polled, and cancelled, only while ``/proc/<pid>`` is the same process,
    started at the recorded time (a handle without one: running ``shardflow.worker``). A
    pid reused by an unrelated process is never signalled.
    """

    name = "local"

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_slots(self, spec: SlotSpec) -> list[str]:
        paths = LocalPaths(self.workspace, self.workspace / "scratch")
        handles = []
        env = {**os.environ, **spec.env}
        for n in range(spec.count):
            slot = f"{spec.group_id}-{n}"
            log_path = paths.slot_log(spec.job_id, slot)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as out:
                proc = subprocess.Popen(
                    [*spec.argv, "--slot", f"local-{slot}"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            started = _start_time(proc.pid)
            handle = f"local:{proc.pid}" + (f":{started}" if started is not None else "")
            self._procs[handle] = proc
            handles.append(handle)
        return handles

    def preflight(self) -> None:
        """Nothing to check: processes of this machine can always be started."""

    def poll(self, handles: Sequence[str]) -> dict[str, SlotState]:
        """One state per slot. A slot stopped by a signal (SIGSTOP) counts as not active: it
        does no work, its leases lapse, and another slot is started for its tasks."""
        states: dict[str, SlotState] = {}
        for handle in handles:
            proc = self._procs.get(handle)
            if _stopped(handle):
                states[handle] = SlotState.FAILED
            elif proc is not None:
                code = proc.poll()
                if code is None:
                    states[handle] = SlotState.RUNNING
                elif code == 0:
                    states[handle] = SlotState.DONE
                elif code < 0 and -code in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                    states[handle] = SlotState.CANCELLED
                else:
                    states[handle] = SlotState.FAILED
            else:
                states[handle] = SlotState.RUNNING if _alive(handle) else SlotState.DONE
        return states

    def cancel(self, handles: Sequence[str]) -> None:
        for handle in handles:
            pid = _pid(handle)
            proc = self._procs.get(handle)
            if pid is None or (proc.poll() is not None if proc else not _alive(handle)):
                continue  # gone, or the pid now belongs to another process
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue

    def wait(self, timeout: float | None = None) -> None:
        for proc in self._procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _parts(handle: str) -> tuple[int, int | None] | None:
    """``(pid, start time)`` of a ``local:<pid>[:<start>]`` handle; None if malformed."""
    prefix, _, rest = handle.partition(":")
    pid, _, start = rest.partition(":")
    if prefix != "local" or not pid.isdigit() or not (start == "" or start.isdigit()):
        return None
    return int(pid), int(start) if start else None


def _pid(handle: str) -> int | None:
    parts = _parts(handle)
    return parts[0] if parts else None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field
    22), or None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])  # fields after the command: state is field 3, start 22
    except (OSError, IndexError, ValueError):
        return None


def _stopped(handle: str) -> bool:
    pid = _pid(handle)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


def _alive(handle: str) -> bool:
    """Is the slot process still running? (A zombie, or a reused pid, is not our slot:
    the process must have the start time the handle recorded.)"""
    parts = _parts(handle)
    if parts is None:
        return False
    pid, started = parts
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        if state in ("Z", "X"):
            return False
        if started is not None:  # a pid and its start time name one process for good
            return _start_time(pid) == started
        # an old handle without a start time: the worker's command line at least (empty
        # for an instant while a process starts, so a new handle always has the time)
        return b"shardflow.worker" in cmdline
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def worker_argv(state_url: str, job_id: str, workspace: Path) -> list[str]:
    """The worker command line every executor runs."""
    return [
        sys.executable,
        "-m",
        "shardflow.worker",
        "--state",
        state_url,
        "--job",
        job_id,
        "--workspace",
        str(workspace),
    ]
