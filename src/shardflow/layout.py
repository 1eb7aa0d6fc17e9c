"""The one owner of object keys and local paths.

Every key under a store's prefix and every path under the local workspace is built here,
and every id is validated against :data:`ID_PATTERN` before it becomes part of one. No
other module joins strings into keys or paths.

Object keys (relative to the store's prefix)::

    jobs/{job}/job.json
    jobs/{job}/batches/{batch}.{fmt}
    jobs/{job}/tasks/part-{part}.json                task manifests: the batches of a run of tasks
    jobs/{job}/split/_DONE.json                     split plan (written last)
    jobs/{job}/rejects/{part}.jsonl                 malformed input lines, with reasons
    jobs/{job}/results/[{hh}/]{task}/{attempt}.arrow           Arrow IPC (lz4)
    jobs/{job}/results/[{hh}/]{task}/{attempt}.failures.arrow
    jobs/{job}/results/[{hh}/]{task}.done
    jobs/{job}/logs/{task}/{attempt}.log
    jobs/{job}/output/{name}.{fmt}, output/_MANIFEST.json, output/_SUCCESS
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from shardflow.errors import InvalidIdError

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
OUTPUT_FORMATS = frozenset({"parquet", "csv", "sqlite"})


def validate_id(value: str, kind: str = "id") -> str:
    """Return ``value`` if it is a valid id, else raise :class:`InvalidIdError`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise InvalidIdError(
            f"invalid {kind} {value!r}: use 1-63 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def slugify(text: str, limit: int = 40) -> str:
    """A valid id fragment made from free text (job names may be anything)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-_")[:limit].strip("-_")
    return slug or "job"


def validate_object_name(name: str) -> str:
    """Return ``name`` if it may end an object key or file name, else raise
    :class:`InvalidIdError`: 1-128 characters of letters, digits, '.', '_' and '-',
    starting with a letter or digit, with no '..'."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or ".." in name:
        raise InvalidIdError(f"invalid object name {name!r}")
    return name


def _name(value: str) -> str:
    return validate_object_name(value)


def _attempt(attempt: int) -> str:
    if not isinstance(attempt, int) or attempt < 0:
        raise InvalidIdError(f"invalid attempt {attempt!r}")
    return f"{attempt:04d}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Object keys for one job. ``spread`` puts result keys under hashed prefixes.

    S3 serves about 3,500 writes per second per prefix; with ``spread=True`` result keys
    get a two-hex-digit prefix from the task id's hash, spreading them over 256 prefixes.
    """

    job_id: str
    spread: bool = False

    def __post_init__(self) -> None:
        validate_id(self.job_id, "job id")

    @property
    def root(self) -> str:
        return f"jobs/{self.job_id}"

    def job_manifest(self) -> str:
        return f"{self.root}/job.json"

    def batch(self, batch_id: str, ext: str) -> str:
        return f"{self.root}/batches/{validate_id(batch_id, 'batch id')}.{_name(ext)}"

    def task_part(self, part: int) -> str:
        if not isinstance(part, int) or part < 0:
            raise InvalidIdError(f"invalid task manifest part {part!r}")
        return f"{self.root}/tasks/part-{part:06d}.json"

    def split_done(self) -> str:
        return f"{self.root}/split/_DONE.json"

    def rejects(self, part: str) -> str:
        return f"{self.root}/rejects/{validate_id(part, 'rejects part')}.jsonl"

    def rejects_prefix(self) -> str:
        return f"{self.root}/rejects/"

    def _results(self, task_id: str) -> str:
        validate_id(task_id, "task id")
        if self.spread:
            digest = hashlib.sha256(task_id.encode()).hexdigest()[:2]
            return f"{self.root}/results/{digest}/{task_id}"
        return f"{self.root}/results/{task_id}"

    def result(self, task_id: str, attempt: int, ext: str = "arrow") -> str:
        return f"{self._results(task_id)}/{_attempt(attempt)}.{_name(ext)}"

    def failures(self, task_id: str, attempt: int, ext: str = "arrow") -> str:
        return f"{self._results(task_id)}/{_attempt(attempt)}.failures.{_name(ext)}"

    def attempt_prefix(self, task_id: str) -> str:
        return f"{self._results(task_id)}/"

    def marker(self, task_id: str) -> str:
        return f"{self._results(task_id)}.done"

    def results_prefix(self) -> str:
        return f"{self.root}/results/"

    def task_log(self, task_id: str, attempt: int) -> str:
        return f"{self.root}/logs/{validate_id(task_id, 'task id')}/{_attempt(attempt)}.log"

    def output(self, name: str, fmt: str) -> str:
        if fmt not in OUTPUT_FORMATS and fmt not in {"jsonl"}:
            raise InvalidIdError(f"invalid output format {fmt!r}")
        return f"{self.output_prefix()}{_name(name)}.{fmt}"

    def output_prefix(self) -> str:
        return f"{self.root}/output/"

    def output_manifest(self) -> str:
        return f"{self.output_prefix()}_MANIFEST.json"

    def output_success(self) -> str:
        return f"{self.output_prefix()}_SUCCESS"


@dataclass(frozen=True, slots=True)
class LocalPaths:
    """Paths under the local workspace (``.shardflow/`` by default) and node scratch."""

    workspace: Path
    scratch: Path

    def _safe_child(self, base: Path, *parts: str) -> Path:
        """``base/parts…``, refused if it would leave ``base`` through a symlink planted
        in scratch. The parts are checked ids and names (no ``/``, no ``..``), so only a
        link at one of them can lead out: one lstat each, and a link found is resolved."""
        path = base
        for part in parts:
            path = path / part
            if os.path.islink(path):
                resolved_base = base.resolve()
                resolved = path.resolve()
                if resolved != resolved_base and resolved_base not in resolved.parents:
                    raise InvalidIdError(f"path {path} leaves {base}")
        return path

    def checkpoint_dir(self, job_id: str, task_id: str) -> Path:
        return self._safe_child(
            self.scratch, validate_id(job_id, "job id"), validate_id(task_id, "task id")
        )

    def job_scratch_dir(self, job_id: str) -> Path:
        return self._safe_child(self.scratch, validate_id(job_id, "job id"))

    def log_file(self, job_id: str, task_id: str, attempt: int) -> Path:
        return self._safe_child(
            self.workspace,
            "logs",
            validate_id(job_id, "job id"),
            f"{validate_id(task_id, 'task id')}.{_attempt(attempt)}.log",
        )

    def job_log_dir(self, job_id: str) -> Path:
        return self._safe_child(self.workspace, "logs", validate_id(job_id, "job id"))

    def slot_log(self, job_id: str, slot: str) -> Path:
        return self._safe_child(
            self.workspace, "logs", validate_id(job_id, "job id"), f"slot-{_name(slot)}.log"
        )
