"""The Slurm executor: worker slots as job arrays, tracked with squeue/sacct/jobcomp.

Slots of one task group are one ``sbatch --array`` (several when the group is larger
than the cluster's MaxArraySize); handles are the array job ids. Scripts come from
:mod:`shardflow.executors.slurm_render`, states from
:mod:`shardflow.executors.slurm_track`. Every Slurm command is retried on the errors a
busy slurmctld gives, and ``sbatch`` calls are spaced by ``submit_rate`` so a large job
does not hammer the controller.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shardflow.coordinator.retry import RetryPolicy
from shardflow.errors import ConfigError
from shardflow.executors.base import SlotSpec, SlotState
from shardflow.executors.slurm_commands import (
    Runner,
    SlurmCommands,
    SlurmError,
    check_handle,
    cluster_available,
    run_command,
)
from shardflow.executors.slurm_render import (
    SlurmFollowupSpec,
    SlurmSlotSpec,
    render_reconcile_script,
    render_slot_script,
)
from shardflow.executors.slurm_settings import SlurmSettings, settings_from_config
from shardflow.executors.slurm_track import (
    JobRecord,
    aggregate_state,
    merge_states,
    parse_jobcomp,
    parse_sacct,
    parse_squeue,
)
from shardflow.layout import validate_id

__all__ = [
    "SlurmError",
    "SlurmExecutor",
    "SlurmSettings",
    "cluster_available",
    "slurm_executor_from_config",
]

log = logging.getLogger("shardflow.executors.slurm")

_IDS_PER_CALL = 100
# squeue's answer for a list of ids none of which slurmctld still holds
_UNKNOWN_JOBS = "Invalid job id specified"


def _chunks(items: Sequence[str]) -> list[list[str]]:
    return [list(items[i : i + _IDS_PER_CALL]) for i in range(0, len(items), _IDS_PER_CALL)]


class SlurmExecutor:
    """Starts slots as Slurm job arrays; handles are array job ids (``"123"``).

    ``runner`` runs Slurm commands (default:
    :func:`~shardflow.executors.slurm_commands.run_command`); ``clock``, ``sleep`` and
    ``rng`` drive rate limiting and retry backoff, so tests need no real time.
    """

    name = "slurm"

    def __init__(
        self,
        workspace: Path,
        settings: SlurmSettings | None = None,
        *,
        runner: Runner | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.workspace = Path(workspace)
        self.settings = s = settings or SlurmSettings()
        self.commands = SlurmCommands(
            runner or (lambda argv: run_command(argv, s.command_timeout_s)),
            retries=s.sbatch_retries,
            submit_rate=s.submit_rate,
            backoff=RetryPolicy(base=s.retry_base_s, cap=s.retry_cap_s),
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        self._config: dict[str, str] | None = None

    # ---- cluster facts ------------------------------------------------------------

    def preflight(self) -> None:
        """Refuse, before a job is made, what would fail at the first sbatch: no Slurm
        commands on this machine, or a partition the cluster does not have."""
        if shutil.which("sbatch") is None:
            raise SlurmError(
                "backends.executor is slurm but sbatch is not on this machine's PATH: run "
                "from a Slurm login node, or set backends.executor: local"
            )
        partition = self.settings.resources.partition
        if partition:
            out = self.commands.check(["sinfo", "-h", "-o", "%R"])
            known = sorted({line.strip() for line in out.splitlines() if line.strip()})
            if partition not in known:
                raise SlurmError(
                    f"resources.partition: Slurm has no partition {partition!r} "
                    f"(it has: {', '.join(known) or 'none'})"
                )

    def cluster_config(self) -> dict[str, str]:
        """``scontrol show config`` as a dict (read once per executor)."""
        if self._config is None:
            out = self.commands.check(["scontrol", "show", "config"])
            config = {}
            for line in out.splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    config[key.strip()] = value.strip()
            self._config = config
        return self._config

    def max_array_size(self) -> int:
        """Elements one array may hold (indices 0..n-1): the override, else MaxArraySize."""
        if self.settings.max_array_size is not None:
            return self.settings.max_array_size
        value = self.cluster_config().get("MaxArraySize", "1001")
        if not value.isdigit() or int(value) < 1:
            raise SlurmError(f"scontrol reports MaxArraySize={value!r}")
        return int(value)

    # ---- starting slots -------------------------------------------------------------

    def plan_slots(self, spec: SlotSpec) -> list[tuple[Path, str]]:
        """The scripts :meth:`start_slots` would write and submit: (path, text) per array.

        Nothing is written or submitted (``--dry-run``). Raises ValueError for an invalid
        spec or setting.
        """
        validate_id(spec.job_id, "job id")
        validate_id(spec.group_id, "task group id")
        if spec.count < 1:
            raise ValueError(f"slot count must be at least 1, not {spec.count}")
        size = self.max_array_size()
        counts = [min(size, spec.count - start) for start in range(0, spec.count, size)]
        throttles = _split_throttle(self.settings.array_throttle, len(counts))
        s = self.settings
        log_path = self._log_path(s.log_pattern, spec.job_id, spec.group_id)
        scripts = []
        for k, (count, throttle) in enumerate(zip(counts, throttles, strict=True)):
            slot_spec = SlurmSlotSpec(
                job_id=spec.job_id,
                group_id=spec.group_id,
                last_index=count - 1,
                command=tuple(spec.argv),
                log_path=log_path,
                resources=s.resources,
                # a throttle at or above the array's size would limit nothing
                throttle=throttle if throttle is not None and throttle < count else None,
                signal_grace_s=s.signal_grace_s,
                requeue=s.requeue,
                python=s.python,
                setup_lines=s.setup_lines,
                env=dict(spec.env),
                workdir=s.workdir or os.getcwd(),
            )
            path = self._script_dir(spec.job_id) / f"{spec.group_id}-{k}.sbatch"
            scripts.append((path, render_slot_script(slot_spec)))
        return scripts

    def start_slots(self, spec: SlotSpec) -> list[str]:
        """Write and submit the arrays of ``spec``; return their job ids.

        Arrays hold at most :meth:`max_array_size` elements each. When one submission
        fails for good, the arrays already submitted are cancelled and SlurmError is
        raised, so no slot runs without a recorded handle.
        """
        scripts = self.plan_slots(spec)
        self._make_log_dir(self._log_path(self.settings.log_pattern, spec.job_id, spec.group_id))
        handles: list[str] = []
        try:
            for path, text in scripts:
                _write_script(path, text)
                handles.append(self.commands.sbatch(path, f"sf-{spec.job_id}-{spec.group_id}"))
        except BaseException:
            self.cancel(handles)
            raise
        log.info("submitted %d slots of %s as arrays %s", spec.count, spec.group_id, handles)
        return handles

    def plan_followup(
        self,
        job_id: str,
        argv: Sequence[str],
        after: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> tuple[Path, str]:
        """The script :meth:`submit_followup` would submit, as (path, text)."""
        deps = tuple(check_handle(h) for h in after)
        s = self.settings
        spec = SlurmFollowupSpec(
            job_id=job_id,
            command=tuple(argv),
            log_path=self._log_path(s.followup_log_pattern, job_id, "reconcile"),
            after=deps,
            resources=s.followup_resources,
            python=s.python,
            setup_lines=s.setup_lines,
            env=dict(env or {}),
            workdir=s.workdir or os.getcwd(),
        )
        name = f"reconcile-{deps[0]}" if deps else "reconcile"
        return self._script_dir(job_id) / f"{name}.sbatch", render_reconcile_script(spec)

    def submit_followup(
        self,
        job_id: str,
        argv: Sequence[str],
        after: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> str:
        """Submit one job running ``argv`` after every job in ``after`` has ended.

        Uses ``--dependency=afterany`` (success or not); returns its job id.
        """
        path, text = self.plan_followup(job_id, argv, after, env)
        self._make_log_dir(self._log_path(self.settings.followup_log_pattern, job_id, "reconcile"))
        _write_script(path, text)
        return self.commands.sbatch(path, f"sf-{job_id}-reconcile")

    # ---- tracking -------------------------------------------------------------------

    def poll(self, handles: Sequence[str]) -> dict[str, SlotState]:
        """One state per handle (array or job), from all of its elements.

        UNKNOWN when Slurm cannot be asked right now (after retries). A job slurmctld no
        longer holds and no record names has ended long ago: DONE.
        """
        ids = [check_handle(h) for h in handles]
        live = self._squeue(ids, expand=False)
        if live is None:
            return dict.fromkeys(handles, SlotState.UNKNOWN)
        by_job = merge_states(live)
        ended = [j for j in ids if not any(s.is_active for s in by_job.get(j, {}).values())]
        records = self._records(ended) if ended else []
        if records is not None:
            by_job = merge_states(live, records)
        states = {}
        for handle, job in zip(handles, ids, strict=True):
            elements = by_job.get(job)
            if elements:
                states[handle] = aggregate_state(elements)
            else:
                states[handle] = SlotState.UNKNOWN if records is None else SlotState.DONE
        return states

    def slot_states(self, handles: Sequence[str]) -> dict[str, SlotState]:
        """The state of each array element (``"123_4"``) of ``handles``, for status."""
        ids = [check_handle(h) for h in handles]
        live = self._squeue(ids, expand=True)
        records = self._records(ids) or []
        merged = merge_states(live or [], records)
        return {key: state for job in ids for key, state in merged.get(job, {}).items()}

    def cancel(self, handles: Sequence[str]) -> None:
        """``scancel`` every array or job in ``handles``; cancelling twice is harmless."""
        ids = [check_handle(h) for h in handles]
        for chunk in _chunks(ids):
            rc, _, err = self.commands.call(["scancel", *chunk])
            if rc != 0 and _UNKNOWN_JOBS not in err:
                raise SlurmError(f"scancel {' '.join(chunk)} failed (exit {rc}): {err.strip()}")

    # ---- helpers --------------------------------------------------------------------

    def _squeue(self, ids: Sequence[str], *, expand: bool) -> list[JobRecord] | None:
        records: list[JobRecord] = []
        for chunk in _chunks(ids):
            argv = ["squeue", "-h", "-t", "all", "-j", ",".join(chunk), "-o", "%i %T"]
            rc, out, err = self.commands.call([*argv, "-r"] if expand else argv)
            if rc != 0 and _UNKNOWN_JOBS in err:
                continue
            if rc != 0:
                log.warning("squeue failed (exit %d): %s", rc, err.strip())
                return None
            records += parse_squeue(out)
        return records

    def _records(self, ids: Sequence[str]) -> list[JobRecord] | None:
        """Records of ended jobs from sacct, else the jobcomp file; None if unreadable."""
        config = self.cluster_config()
        if config.get("AccountingStorageType", "accounting_storage/none") != (
            "accounting_storage/none"
        ):
            records: list[JobRecord] = []
            for chunk in _chunks(ids):
                argv = ["sacct", "-n", "-P", "-X", "-j", ",".join(chunk)]
                rc, out, err = self.commands.call([*argv, "-o", "JobID,State,ExitCode"])
                if rc != 0:
                    log.warning("sacct failed (exit %d): %s", rc, err.strip())
                    return None
                records += parse_sacct(out)
            return records
        location = config.get("JobCompLoc", "")
        if config.get("JobCompType") != "jobcomp/filetxt" or not location.startswith("/"):
            return []
        try:
            with open(location, encoding="utf-8", errors="replace") as lines:
                return parse_jobcomp(lines, ids)
        except FileNotFoundError:
            return []  # no job has ended since the file was rotated or created
        except OSError as exc:
            log.warning("cannot read the jobcomp file %s: %s", location, exc)
            return None

    def _script_dir(self, job_id: str) -> Path:
        return self.workspace / "slurm" / validate_id(job_id, "job id")

    def _log_path(self, pattern: str, job_id: str, group_id: str) -> str:
        return (
            pattern.replace("{workspace}", str(self.workspace))
            .replace("{job_id}", validate_id(job_id, "job id"))
            .replace("{group_id}", validate_id(group_id, "task group id"))
        )

    @staticmethod
    def _make_log_dir(log_path: str) -> None:
        # Slurm does not create the --output folder: a missing one fails the job silently
        parent = Path(log_path).parent
        if "%" not in str(parent):
            parent.mkdir(parents=True, exist_ok=True)


def _split_throttle(throttle: int | None, arrays: int) -> list[int | None]:
    """Share a group's throttle among its arrays, so the whole group honours it."""
    if throttle is None:
        return [None] * arrays
    base, extra = divmod(throttle, arrays)
    return [max(1, base + (1 if k < extra else 0)) for k in range(arrays)]


def _write_script(path: Path, text: str) -> None:
    # 0600: the script may carry environment values; rename makes it appear whole
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def slurm_executor_from_config(settings: object, workspace: Path) -> SlurmExecutor:
    """A SlurmExecutor from a job config (``resources.*``, ``slurm.*``), or defaults.

    ``settings`` may be a :class:`SlurmSettings`, a job config, or None. Raises
    ConfigError for a value Slurm cannot take.
    """
    if isinstance(settings, SlurmSettings):
        return SlurmExecutor(workspace, settings)
    try:
        return SlurmExecutor(workspace, settings_from_config(settings))
    except ValueError as exc:
        raise ConfigError(f"slurm settings: {exc}") from exc
