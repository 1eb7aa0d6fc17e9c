"""Chaos soak: a job whose worker slots and coordinator are SIGKILLed every few seconds.

A seeded schedule kills a random slot, or the whole `shardflow run` process group (the
coordinator and every slot), at random intervals; a killed coordinator is restarted with
the same ``--job-id``. Chaos goes on until the job completes (or the time budget ends;
then the last run finishes fault-free). The output must keep I1-I5 and equal a clean
run's row for row (I6).

CI runs a short fixed-seed version (20,000 items). ``pytest --soak`` runs 100,000 items
(batches of 1,000) for up to 10 minutes of chaos; ``SHARDFLOW_SOAK_ITEMS``,
``SHARDFLOW_SOAK_SECONDS`` and ``SHARDFLOW_SOAK_SEED`` set each number.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.helpers import FaultJob, assert_same_output, kill_group, make_dataset

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class SoakSettings:
    items: int
    seconds: float
    seed: int
    interval: tuple[float, float]  # seconds between two kills
    item_sleep: str  # stretches a short job so that it sees enough kills


def settings(config: pytest.Config) -> SoakSettings:
    full = bool(config.getoption("--soak"))
    return SoakSettings(
        items=int(os.environ.get("SHARDFLOW_SOAK_ITEMS", 100_000 if full else 20_000)),
        seconds=float(os.environ.get("SHARDFLOW_SOAK_SECONDS", 600 if full else 40)),
        seed=int(os.environ.get("SHARDFLOW_SOAK_SEED", 20260425)),
        interval=(1.0, 4.0) if full else (0.6, 2.0),
        item_sleep="0.0005" if full else "0.0012",
    )


def soak_config() -> dict[str, object]:
    return {
        "batching": {"records": 1000},
        # no task may run out of attempts: every kill costs the attempt it interrupts
        "retry": {"max_attempts": 1000, "tolerated_failure_percent": 10},
        "worker": {"lease_ttl": "2s", "heartbeat": "0.5s", "checkpoint_every": 250},
    }


def run_chaos(job: FaultJob, s: SoakSettings) -> Counter[str]:
    """Kill slots and coordinators until the job succeeds; return the kills survived."""
    rng = random.Random(s.seed)
    kills: Counter[str] = Counter()
    env = job.env(FAULT_ITEM_SLEEP=s.item_sleep)
    run = job.start(env=env)
    stop_at = time.monotonic() + s.seconds
    while time.monotonic() < stop_at:
        try:
            code = run.wait(timeout=rng.uniform(*s.interval))
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            if code == 0:
                return kills
            run = job.start(env=env)  # it ended another way (e.g. exit 1): drive it on
            continue
        if rng.random() < 0.3:
            kill_group(run)  # the coordinator and every slot, wherever they are
            run.wait()
            kills["coordinator"] += 1
            run = job.start(env=env)
        else:
            slots = job.workers()
            if slots:
                victim = rng.choice(sorted(slots, key=lambda p: p.pid))
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                    kills["slot"] += 1
                except ProcessLookupError:
                    pass
    # faults stop: I5, the job must now finish on its own
    code = job.finish(run, timeout=300)
    assert code == 0, job.tail()
    return kills


def test_chaos_soak_loses_no_item_and_matches_a_clean_run(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    s = settings(pytestconfig)
    data = make_dataset(tmp_path / "soak.jsonl", s.items, seed=s.seed % 1000)
    clean = FaultJob(tmp_path / "clean", data, job_id="soak", config=soak_config())
    chaos = FaultJob(tmp_path / "chaos", data, job_id="soak", config=soak_config())
    try:
        assert clean.run(timeout=600)["status"] == "SUCCEEDED"
        started = time.monotonic()
        kills = run_chaos(chaos, s)
        elapsed = time.monotonic() - started

        out = chaos.check(refused=data.refused)
        assert_same_output(out, clean.check())
        summary = chaos.summary()
        assert summary["status"] == "SUCCEEDED"
        lost = len(data.keys) - out.results.num_rows - out.failures.num_rows
        assert lost == 0
        print(
            f"\nsoak: {s.items} items, {summary['tasks']['total']} tasks, seed {s.seed}: "
            f"survived {kills['slot']} slot kills and {kills['coordinator']} coordinator "
            f"kills in {elapsed:.1f}s ({summary['attempts']} attempts); items lost: {lost}"
        )
        assert sum(kills.values()) >= 5  # the schedule really did kill things
    finally:
        clean.cleanup()
        chaos.cleanup()
