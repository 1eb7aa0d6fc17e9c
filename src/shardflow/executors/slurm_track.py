"""Reading slot states out of Slurm's answers: pure parsers and the state mapping.

Three sources, freshest first: ``squeue`` (every job slurmctld still holds: active
ones, and finished ones for ``MinJobAge``), ``sacct`` (when accounting is on) and the
jobcomp file (``jobcomp/filetxt``, when it is off). An array element is keyed
``"<array job id>_<index>"``; a job that is not an array by its own id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shardflow.executors.base import SlotState

_PENDING = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESIZING"}
_FAILED = {
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "REVOKED",
}
_KEY_VALUE = re.compile(r"(\w+)=(\S*)")
# 123, 123_4, 123_[0-5%2], 123_[1,3,7-9]
_JOB_ID = re.compile(r"^(\d+)(?:_(\d+|\[[0-9,\-%]+\]))?$")
# Slurm caps MaxArraySize at 4000001, so no real range is longer than this
_MAX_EXPAND = 4_000_001


def map_state(slurm_state: str) -> SlotState:
    """Map a Slurm job state (``CANCELLED by 0`` included) to a :class:`SlotState`."""
    word = slurm_state.strip().split(" ", 1)[0].rstrip("+").upper()
    if word in _PENDING:
        return SlotState.PENDING
    if word in _RUNNING:
        return SlotState.RUNNING
    if word == "COMPLETED":
        return SlotState.DONE
    if word in _FAILED:
        return SlotState.FAILED
    if word.startswith("CANCELLED"):
        return SlotState.CANCELLED
    return SlotState.UNKNOWN


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One line of squeue/sacct/jobcomp: a job or array element, or a pending range.

    ``indices`` is None for a job that is not an array, else the element indices it
    covers (one for a started element, several for a pending range).
    """

    job: str
    indices: tuple[int, ...] | None
    state: SlotState

    def element_keys(self) -> list[str]:
        if self.indices is None:
            return [self.job]
        return [f"{self.job}_{i}" for i in self.indices]


def _expand(spec: str) -> tuple[int, ...]:
    """Indices of ``[0-5%2]`` or ``[1,3,7-9]``; raises ValueError when too large."""
    body = spec.strip("[]").split("%", 1)[0]
    out: list[int] = []
    for part in body.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last - first + len(out) >= _MAX_EXPAND:
            raise ValueError(f"array range {spec} is too large to expand")
        out.extend(range(first, last + 1))
    return tuple(out)


def parse_job_id(text: str) -> tuple[str, tuple[int, ...] | None] | None:
    """``(job, indices)`` for a Slurm job id as squeue/sacct print it; None if foreign.

    Job steps (``123_4.batch``), heterogeneous jobs (``123+0``) and anything else that
    is not a job or an array element give None.
    """
    match = _JOB_ID.fullmatch(text.strip())
    if match is None:
        return None
    job, element = match.group(1), match.group(2)
    if element is None:
        return job, None
    if element.isdigit():
        return job, (int(element),)
    try:
        return job, _expand(element)
    except ValueError:
        return None


def parse_squeue(text: str) -> list[JobRecord]:
    """Records from ``squeue -h -o "%i %T"`` (with or without ``-r``)."""
    records = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        parsed = parse_job_id(parts[0])
        if parsed is not None:
            records.append(JobRecord(parsed[0], parsed[1], map_state(" ".join(parts[1:]))))
    return records


def parse_sacct(text: str) -> list[JobRecord]:
    """Records from ``sacct -n -P -X -o JobID,State,ExitCode``; steps are skipped."""
    records = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 2:
            continue
        parsed = parse_job_id(parts[0])
        if parsed is not None:
            records.append(JobRecord(parsed[0], parsed[1], map_state(parts[1])))
    return records


def parse_jobcomp(lines: Iterable[str], jobs: Iterable[str]) -> list[JobRecord]:
    """Records of ``jobs`` (array or plain job ids) from a jobcomp/filetxt file's lines.

    Each line is ``Key=value`` pairs; an array element carries ``ArrayJobId`` and
    ``ArrayTaskId``, a plain job only ``JobId``. Lines come in completion order, so a
    later line (after a requeue) replaces an earlier one in :func:`merge_states`.
    """
    wanted = set(jobs)
    records = []
    for line in lines:
        fields = dict(_KEY_VALUE.findall(line))
        state = fields.get("JobState")
        if state is None:
            continue
        array_job, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId", "")
        if array_job and array_job in wanted and task.isdigit():
            records.append(JobRecord(array_job, (int(task),), map_state(state)))
        elif not array_job and fields.get("JobId") in wanted:
            records.append(JobRecord(fields["JobId"], None, map_state(state)))
    return records


def merge_states(*sources: Iterable[JobRecord]) -> dict[str, dict[str, SlotState]]:
    """Per job, the state of each element key; an earlier source wins over a later one.

    Pass the freshest source first (squeue, then sacct or jobcomp). Within one source a
    later record replaces an earlier one.
    """
    merged: dict[str, dict[str, SlotState]] = {}
    for source in reversed(sources):
        for record in source:
            elements = merged.setdefault(record.job, {})
            for key in record.element_keys():
                elements[key] = record.state
    for job, elements in merged.items():
        # sacct shows an array's last element by its bare id until its array fields arrive
        if len(elements) > 1:
            elements.pop(job, None)
    return merged


def aggregate_state(elements: Mapping[str, SlotState]) -> SlotState:
    """One state for a whole array from its elements' states.

    Active wins (RUNNING if any element runs, else PENDING/UNKNOWN); once every element
    has ended: FAILED if any failed, else CANCELLED if any was cancelled, else DONE.
    """
    states = set(elements.values())
    if SlotState.RUNNING in states:
        return SlotState.RUNNING
    if SlotState.PENDING in states:
        return SlotState.PENDING
    if SlotState.UNKNOWN in states:
        return SlotState.UNKNOWN
    for final in (SlotState.FAILED, SlotState.CANCELLED, SlotState.DONE):
        if final in states:
            return final
    return SlotState.UNKNOWN
