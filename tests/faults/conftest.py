"""Fixtures of the fault suite: one shared input, one clean run of it, and fault jobs.

``--soak`` (or ``SHARDFLOW_SOAK_ITEMS`` / ``SHARDFLOW_SOAK_SECONDS``) runs the chaos soak
at full size instead of CI's short fixed-seed version; see ``test_soak.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shardflow.testing.invariants import JobOutput
from tests.faults.helpers import Dataset, FaultJob, make_dataset

RECORDS = 8000  # 20 tasks of 400 records


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the chaos soak at full size (100,000 items, 5 minutes of faults)",
    )


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("faults-data") / "users.jsonl", RECORDS, seed=7)


@pytest.fixture(scope="session")
def clean_job(tmp_path_factory: pytest.TempPathFactory, dataset: Dataset) -> FaultJob:
    """A fault-free run of the shared input, finished."""
    job = FaultJob(tmp_path_factory.mktemp("faults-clean"), dataset)
    summary = job.run()
    assert summary["status"] == "SUCCEEDED"
    return job


@pytest.fixture(scope="session")
def clean(clean_job: FaultJob, dataset: Dataset) -> JobOutput:
    """The clean run's output (checked): what every faulty run must equal."""
    return clean_job.check(refused=dataset.refused)


@pytest.fixture
def fault_job(tmp_path: Path, dataset: Dataset) -> Iterator[Callable[..., FaultJob]]:
    """Make :class:`FaultJob` s over the shared input; whatever they leave running is
    killed at the end of the test."""
    made: list[FaultJob] = []

    def make(name: str = "job", **kwargs: Any) -> FaultJob:
        job = FaultJob(tmp_path / name, dataset, **kwargs)
        made.append(job)
        return job

    yield make
    for job in made:
        job.cleanup()
