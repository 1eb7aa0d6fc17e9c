"""What the `shardflow` command says when it cannot do what was asked: an unknown command,
a job file with problems, a state URL it cannot open. Exit code 2 and a message on
stderr; nothing is started."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shardflow.cli.main import COMMANDS, cli


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_an_unknown_command_is_a_usage_error() -> None:
    code, _, err = _cli("sumbit")
    assert code == 2
    assert "No such command 'sumbit'" in err


def test_every_command_is_listed_and_loads() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert names == sorted(COMMANDS)
    for name in names:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        assert cli.get_command(ctx, name) is command
    assert cli.get_command(ctx, "nope") is None


def test_a_job_file_with_problems_lists_each_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text("name: broken\ninput: {path: in.jsonl}\nbatching: {records: -5}\n")
    code, _, err = _cli("run", str(job))
    assert code == 2
    assert "handler" in err
    assert "records" in err
    assert "hint: fix the 2 problem(s) above, then re-run" in err
    assert not (tmp_path / ".shardflow").exists()


def test_a_state_url_of_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    code, _, err = _cli("jobs", "--state-url", "redis://localhost/0")
    assert code == 2
    assert err.startswith("error: ")
    assert "redis" in err


def test_status_of_a_job_id_that_cannot_be_one(tmp_path: Path) -> None:
    from shardflow.statestore.sqlite import SqliteStateStore

    SqliteStateStore(tmp_path / "state.db").close()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    code, _, err = _cli("status", "../x", "--state-url", url)
    assert (code, err.startswith("error: ")) == (2, True)
    code, _, err = _cli("status", "missing-job", "--state-url", url)
    assert code == 2
    assert "job missing-job not found" in err
    assert "hint: `shardflow jobs` lists the jobs" in err
