"""The Slurm settings a job file gives: sizes and durations as users write them, and the
values sbatch would refuse, caught before anything is submitted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shardflow.executors.slurm_settings import SlurmSettings, duration_seconds, memory_mb


@pytest.mark.parametrize(
    ("value", "mb"),
    [(2**30, 1024), (1, 1), (1.5 * 2**20, 2), ("2GiB", 2048), ("512M", 512), ("4G", 4096)],
)
def test_memory_is_read_in_mb_rounded_up(value: object, mb: int) -> None:
    assert memory_mb(value) == mb


@pytest.mark.parametrize("value", [True, "lots", "2 PB"])
def test_memory_that_is_not_a_size_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="invalid memory"):
        memory_mb(value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (timedelta(minutes=2), 120.0), ("30s", 30.0), ("90m", 5400.0), ("1d", 86400.0)],
)
def test_durations_are_read_in_seconds(value: object, seconds: float) -> None:
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [(False, "invalid duration"), ("soon", "write e.g. 30s"), (0, "must be above 0")],
)
def test_values_that_are_not_durations_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        duration_seconds(value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"submit_rate": 0}, "submit_rate must be above 0"),
        ({"sbatch_retries": -1}, "sbatch_retries must be 0 or more"),
        ({"max_array_size": 0}, "max_array_size must be at least 1"),
        ({"array_throttle": 0}, "array_throttle must be at least 1"),
        ({"signal_grace_s": 70000}, "signal_grace must be 0..65535"),
    ],
)
def test_settings_sbatch_would_refuse_are_caught_early(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SlurmSettings(**change)
