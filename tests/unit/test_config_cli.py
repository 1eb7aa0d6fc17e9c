"""``shardflow validate``, ``schema``, ``config show`` and ``init`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardflow.cli.main import cli

DATA = Path(__file__).parent / "data" / "config"
MINIMAL = "name: t\nhandler: handlers:process\ninput: {path: data.jsonl}\n"
PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<field>[^:]+): ")


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    # keep the machine's own user config and SHARDFLOW_* variables out of these tests
    env: dict[str, str | None] = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    env |= {name: None for name in os.environ if name.startswith("SHARDFLOW_")}
    return CliRunner(env=env)


def _three_mistakes(stderr: str) -> list[tuple[str, str]]:
    matches = [PROBLEM_LINE.match(line) for line in stderr.splitlines()]
    return [(m["line"], m["field"]) for m in matches if m]


def test_validate_reports_three_mistakes_with_lines(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", str(DATA / "three_mistakes.yaml")])
    assert result.exit_code == 2
    assert _three_mistakes(result.stderr) == [
        ("2", "handler"),
        ("6", "resources.slotz"),
        ("8", "worker.lease_ttl"),
    ]
    assert "did you mean 'slots'?" in result.stderr
    assert "then run `shardflow validate" in result.stderr  # what to do next
    assert result.stdout == ""


def test_validate_through_the_installed_command(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "shardflow"
    assert command.exists(), f"{command} is missing: install the package (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDFLOW_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    done = subprocess.run(
        [str(command), "validate", str(DATA / "three_mistakes.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert _three_mistakes(done.stderr) == [
        ("2", "handler"),
        ("6", "resources.slotz"),
        ("8", "worker.lease_ttl"),
    ]


def test_validate_ok_counts_input_files(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text('{"id": 1}\n')
    (tmp_path / "job.yaml").write_text(MINIMAL.replace("name: t", 'name: "<script>\\e[31m"'))
    result = runner.invoke(cli, ["validate", "job.yaml"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ok: <script>\\x1b[31m (1 input file matched)\n"


def test_validate_reports_a_glob_that_matches_nothing(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(MINIMAL.replace("data.jsonl", "in/*.jsonl"))
    result = runner.invoke(cli, ["validate", "job.yaml"])
    assert result.exit_code == 2
    problems = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert problems[0].startswith("job.yaml:3:")
    assert f"input.path: '{tmp_path}/in/*.jsonl' matches no files" in result.stderr


def test_validate_with_set(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    (tmp_path / "job.yaml").write_text(MINIMAL)
    result = runner.invoke(cli, ["validate", "job.yaml", "--set", "resources.slots=zero"])
    assert result.exit_code == 2
    assert result.stderr.startswith("--set: resources.slots: ")


def test_schema_prints_json_schema(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["properties"]["handler"]["description"]


def test_config_show_lists_values_and_origins(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        MINIMAL
        + "resources: {slots: 2}\nbackends: {kms_key_id: secret-key}\nsecrets: [kms_key_id]\n"
    )
    runner.env["SHARDFLOW_RESOURCES__CPUS"] = "2"
    result = runner.invoke(cli, ["config", "show", "job.yaml", "--set", "retry.max_attempts=7"])
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["resources.slots"].endswith("2  (file:job.yaml:4)")
    assert lines["resources.cpus"].endswith("(env:SHARDFLOW_RESOURCES__CPUS)")
    assert lines["retry.max_attempts"].endswith("7  (cli)")
    assert lines["resources.time"].endswith("3600.0  (default)")
    assert "secret-key" not in result.stdout

    as_json = runner.invoke(cli, ["config", "show", "job.yaml", "--json"])
    data = json.loads(as_json.stdout)
    assert data["resources.slots"] == {"value": 2, "origin": "file:job.yaml:4"}
    assert data["backends.kms_key_id"]["value"] == "***"
    assert data["backends.state"]["value"] == f"sqlite://{tmp_path}/.shardflow/state.db"


def test_init_writes_a_job_that_validates_and_refuses_to_overwrite(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(cli, ["init", "myjob"])
    assert result.exit_code == 0, result.stderr
    job = tmp_path / "myjob" / "job.yaml"
    text = job.read_text()
    assert text.startswith("# yaml-language-server: $schema=./shardflow.schema.json\n")
    schema = json.loads((tmp_path / "myjob" / "shardflow.schema.json").read_text())
    assert "handler" in schema["properties"]
    handler = (tmp_path / "myjob" / "handler.py").read_text()
    assert "def process(record: dict[str, Any], ctx: Any)" in handler
    assert "fn(record, ctx)" in handler or "process(record, ctx)" in handler

    validated = runner.invoke(cli, ["validate", str(job)])
    assert validated.exit_code == 0, validated.stderr
    assert validated.stdout == "ok: myjob (1 input file matched)\n"

    job.write_text(text + "# my edits\n")
    again = runner.invoke(cli, ["init", "myjob"])
    assert again.exit_code == 2
    assert "already exist" in again.stderr
    assert "--force" in again.stderr
    assert job.read_text().endswith("# my edits\n")  # nothing was overwritten

    forced = runner.invoke(cli, ["init", "myjob", "--force"])
    assert forced.exit_code == 0
    assert job.read_text() == text


def test_the_sample_handler_does_what_its_docstring_says(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path)]).exit_code == 0
    namespace: dict[str, object] = {}
    exec(compile((tmp_path / "handler.py").read_text(), "handler.py", "exec"), namespace)  # noqa: S102
    process = namespace["process"]
    assert callable(process)
    assert process({"id": 1, "text": "hello"}, None) == {
        "id": 1,
        "text": "hello",
        "length": 5,
        "upper": "HELLO",
    }


@pytest.mark.parametrize(
    "command", [["validate"], ["schema"], ["config"], ["config", "show"], ["init"]]
)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout
