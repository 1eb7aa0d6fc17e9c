"""Fixtures for tests that need a running Slurm cluster.

``slurm_cluster`` skips a test when no controller answers ``sinfo``, and fails it
instead under ``SHARDFLOW_REQUIRE_SLURM=1`` (CI, where ``.ci/run`` starts one with
``scripts/slurm-dev start``). ``slurm_job_id`` gives each test its own job id and
cancels every Slurm job of that id when the test ends, pass or fail.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardflow.executors.slurm import SlurmExecutor, SlurmSettings, cluster_available


@dataclass(frozen=True)
class SlurmCluster:
    """What the test cluster says about itself (``scontrol show config``)."""

    config: dict[str, str]

    @property
    def max_array_size(self) -> int:
        return int(self.config["MaxArraySize"])

    @property
    def accounting(self) -> bool:
        return self.config.get("AccountingStorageType") != "accounting_storage/none"


def slurm(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a Slurm command for a test; never raises on a non-zero exit."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until ``condition()`` holds (an external system is doing the work)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    if not cluster_available():
        message = (
            "no Slurm controller answers sinfo; start one with "
            '`eval "$(scripts/slurm-dev start)"` (as root)'
        )
        if os.environ.get("SHARDFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(f"SHARDFLOW_REQUIRE_SLURM=1 but {message}")
        pytest.skip(message)
    executor = SlurmExecutor(Path("/nonexistent"), SlurmSettings())
    return SlurmCluster(dict(executor.cluster_config()))


@pytest.fixture
def slurm_job_id(slurm_cluster: SlurmCluster) -> Iterator[str]:
    job_id = f"t-{uuid.uuid4().hex[:10]}"
    yield job_id
    listing = slurm("squeue", "-h", "-o", "%A %j").stdout
    leftovers = sorted(
        {line.split()[0] for line in listing.splitlines() if f" sf-{job_id}-" in f" {line} "}
    )
    if leftovers:
        slurm("scancel", *leftovers)
