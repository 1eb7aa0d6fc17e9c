"""The job config's ``slurm:`` section (docs/slurm.md); read by
:func:`shardflow.executors.slurm_settings.settings_from_config`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shardflow.configtypes import Duration, OneLine, Section, Size

__all__ = ["SlurmConfig", "SlurmReconcileConfig"]


class SlurmReconcileConfig(Section):
    """The follow-up job that reconciles a round; what it leaves out, it takes from the slots
    (partition, account, qos, extra sbatch lines) or from shardflow's small defaults."""

    cpus: int | None = Field(default=None, ge=1, description="CPUs (default 1).")
    memory: Size | None = Field(
        default=None, ge=2**20, description="Memory (default 1GiB; a bare number is bytes)."
    )
    time: Duration | None = Field(default=None, gt=0, description="Time limit (default 15m).")
    partition: Annotated[str | None, OneLine] = Field(default=None, description="Partition.")
    account: Annotated[str | None, OneLine] = Field(default=None, description="Account.")
    qos: Annotated[str | None, OneLine] = Field(default=None, description="QOS.")
    sbatch: Annotated[list[str] | None, OneLine] = Field(
        default=None, description="Extra sbatch options, instead of the slots' ones."
    )


class SlurmConfig(Section):
    log_dir: str | None = Field(default=None, description="Folder for Slurm output files.")
    log_path: str | None = Field(
        default=None,
        description="Slurm output file pattern (overrides log_dir); may use {workspace}, "
        "{job_id}, {group_id}, %A, %a and %j.",
    )
    signal_grace: Duration = Field(
        default=60.0, gt=0, description="SIGTERM this long before the time limit."
    )
    max_array_size: int | None = Field(
        default=None, ge=1, description="Array size limit; null = read from the cluster."
    )
    array_throttle: int | None = Field(
        default=None, ge=1, description="At most this many array elements at once (%N)."
    )
    requeue: bool = Field(default=True, description="Let Slurm requeue preempted slots.")
    python: Annotated[str | None, OneLine] = Field(
        default=None, description="Python interpreter on the nodes (default: this one)."
    )
    setup: Annotated[list[str], OneLine] = Field(
        default_factory=list, description="Shell lines run before the worker, e.g. module load."
    )
    sbatch: Annotated[list[str], OneLine] = Field(
        default_factory=list,
        description="Extra sbatch options (--opt=value or '#SBATCH <options>'), after "
        "resources.extra_sbatch.",
    )
    workdir: Annotated[str | None, OneLine] = Field(
        default=None, description="--chdir (default: the folder shardflow was started in)."
    )
    submit_rate: float = Field(default=2.0, gt=0, description="sbatch calls per second, at most.")
    sbatch_retries: int = Field(
        default=5, ge=0, description="Retries of a Slurm command after a transient error."
    )
    reconcile: SlurmReconcileConfig = Field(
        default_factory=SlurmReconcileConfig, description="The follow-up reconcile job."
    )
