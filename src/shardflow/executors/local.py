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
    """Starts slots as processes of this machine; handles are ``local:<pid>``.

    Slot output goes to ``{workspace}/logs/{job}/slot-{group}-{n}.log``. Processes are
    tracked by this object; a handle from another process (a later ``shardflow``
    command) is polled through ``/proc``-free ``os.kill(pid, 0)``.
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
            handle = f"local:{proc.pid}"
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
            if pid is None:
                continue
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


def _pid(handle: str) -> int | None:
    prefix, _, value = handle.partition(":")
    if prefix != "local" or not value.isdigit():
        return None
    return int(value)


def _stopped(handle: str) -> bool:
    pid = _pid(handle)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


def _alive(handle: str) -> bool:
    """Is the slot process still running? (A zombie, or a reused pid, is not our slot.)"""
    pid = _pid(handle)
    if pid is None:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        return state not in ("Z", "X") and b"shardflow.worker" in cmdline
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
