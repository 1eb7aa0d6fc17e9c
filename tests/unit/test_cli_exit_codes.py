"""The console script's exit codes as a shell sees them: 0 ok, 1 failed (or a prompt
declined), 2 usage, 130 interrupted — Ctrl-C included, which click alone reports as 1."""

from __future__ import annotations

import sys

import click
import pytest

from shardflow.cli import main as cli_main


@click.command()
@click.option("--how", type=click.Choice(["interrupt", "at-prompt", "decline", "fail", "ok"]))
def probe(how: str) -> None:
    """A stand-in command, registered for these tests only."""
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "at-prompt":  # what click.prompt does on Ctrl-C
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise click.Abort() from None
    if how == "decline":
        click.confirm("really?", abort=True)
    if how == "fail":
        sys.exit(1)


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setitem(cli_main.COMMANDS, "probe", (__name__, "probe", "test probe"))
    monkeypatch.setattr(sys, "argv", ["shardflow", *args])
    monkeypatch.setattr(sys, "stdin", open("/dev/null"))  # noqa: SIM115  (a declined prompt)
    with pytest.raises(SystemExit) as info:
        cli_main.main()
    sys.stdin.close()
    code = info.value.code
    return code if isinstance(code, int) else 0


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["probe", "--how", "interrupt"], 130, "interrupted"),
        (["probe", "--how", "at-prompt"], 130, "interrupted"),
        (["probe", "--how", "decline"], 1, "Aborted!"),
        (["probe", "--how", "fail"], 1, ""),
        (["probe", "--how", "ok"], 0, ""),
        (["probe", "--how", "maybe"], 2, "Invalid value for '--how'"),
        (["sumbit"], 2, "No such command 'sumbit'"),
        (["--help"], 0, ""),
    ],
)
def test_exit_codes_follow_the_convention(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    says: str,
) -> None:
    assert run_main(monkeypatch, *args) == code
    assert says in capsys.readouterr().err
