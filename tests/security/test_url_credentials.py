"""A password in a backend URL never reaches the terminal: every command that reads a job
file refuses it before opening a backend or printing a plan (`submit --dry-run` included),
and an adapter URL given on the command line is echoed with its user part masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shardflow.aws import parse_aws_url
from shardflow.cli.main import cli
from shardflow.errors import ConfigError

SECRET = "hunter2-canary"


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "job.yaml", "--dry-run"],
        ["submit", "job.yaml"],
        ["run", "job.yaml"],
        ["validate", "job.yaml"],
        ["config", "show", "job.yaml"],
    ],
    ids=["dry-run", "submit", "run", "validate", "config-show"],
)
def test_a_job_file_with_a_password_in_a_url_is_refused_before_anything_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    (tmp_path / "h.py").write_text("def h(r, ctx):\n    return r\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n', encoding="utf-8")
    (tmp_path / "job.yaml").write_text(
        "name: t\nhandler: h.py:h\ninput: {path: in.jsonl}\n"
        f'backends: {{state: "dynamodb://admin:{SECRET}@jobs-table", queue: "sqs://q"}}\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "backends.state: credentials in the URL" in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / ".shardflow").exists()  # nothing was opened or written


@pytest.mark.parametrize(
    "url",
    [
        f"dynamodb://admin:{SECRET}@t",
        f"dynamodb://admin:{SECRET}@t?bogus=1",
        f"s3://u:{SECRET}@b",
        f"dynamodb://admin:x#{SECRET}@t",  # a '#' makes the rest a "fragment"
        f"dynamodb://t?aws_secret_access_key={SECRET}",  # an option's value
    ],
)
def test_an_adapter_url_is_echoed_with_its_user_part_masked(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_aws_url(url, "dynamodb")
    assert SECRET not in str(info.value)
