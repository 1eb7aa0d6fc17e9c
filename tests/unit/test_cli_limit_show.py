"""`shardflow limit show` on a job without rate limits, and how rates are written for
people: per second, per minute or per hour, whichever keeps the number at least 1."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from shardflow.cli.limit import format_rate
from shardflow.cli.main import cli
from shardflow.models import Job
from shardflow.statestore.sqlite import SqliteStateStore


@pytest.mark.parametrize(
    ("rate", "text"),
    [(50.0, "50/s"), (1.0, "1/s"), (0.5, "30/min"), (1 / 60, "1/min"), (2 / 3600, "2/h")],
)
def test_a_rate_is_written_in_the_largest_unit_that_keeps_it_whole(rate: float, text: str) -> None:
    assert format_rate(rate) == text


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    state = SqliteStateStore(tmp_path / "state.db")
    state.create_job(Job(job_id="plain-job", name="plain"))
    state.close()
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_a_job_without_rate_limits_says_so(state_url: str) -> None:
    result = CliRunner().invoke(cli, ["limit", "show", "plain-job", "--state-url", state_url])
    assert result.exit_code == 0
    assert result.stdout.strip() == "plain-job has no rate limits"
    result = CliRunner().invoke(
        cli, ["limit", "show", "plain-job", "--state-url", state_url, "--json"]
    )
    assert orjson.loads(result.stdout) == {"job_id": "plain-job", "limits": []}


def test_limits_of_a_job_that_is_not_there(state_url: str) -> None:
    result = CliRunner().invoke(cli, ["limit", "show", "other-job", "--state-url", state_url])
    assert result.exit_code == 2
    assert "job other-job not found" in result.stderr


def test_limit_commands_on_a_job_with_a_limit(tmp_path: Path) -> None:
    """The table `limit show` prints, and the usage errors of `limit set` (exit 2, the
    limit unchanged) on a real submitted job."""
    from shardflow.testing.synthetic import write_jsonl
    from tests.e2e.helpers import shardflow, write_job

    write_jsonl(tmp_path / "in.jsonl", 20, seed=1)
    handlers = Path(__file__).parents[1] / "e2e" / "handlers_e2e.py"
    job = write_job(
        tmp_path / "job.yaml",
        f"""
name: limit-show
handler: {handlers}:enrich
input: {{path: in.jsonl}}
batching: {{records: 10}}
rate_limits:
  geo_api: {{rate: 3000/min, burst: 100}}
""",
    )
    shardflow(["submit", str(job), "--job-id", "lim2"], tmp_path, check=0)

    unknown = shardflow(["limit", "set", "lim2", "maps_api", "5/s"], tmp_path, check=2)
    assert "geo_api" in unknown.stderr  # the error names the limits the job has
    bad_rate = shardflow(["limit", "set", "lim2", "geo_api", "fast"], tmp_path, check=2)
    assert "fast" in bad_rate.stderr

    table = shardflow(["limit", "show", "lim2"], tmp_path, check=0).stdout.splitlines()
    assert table[0].split() == ["limit", "rate", "burst", "tokens", "leased", "waiting"]
    row = table[1].split()
    assert row[:3] == ["geo_api", "50/s", "100"]  # unchanged by the refused commands
    assert row[-1] == "0"  # no worker waits: none is running
