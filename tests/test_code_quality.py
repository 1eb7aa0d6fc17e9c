"""The code's own standards, checked as part of the suite: lint, format, types, start-up."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import shardflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_lint_is_clean() -> None:
    proc = _run(str(BIN / "ruff"), "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = _run(str(BIN / "ruff"), "format", "--check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    proc = _run(str(BIN / "mypy"), "--no-incremental")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from shardflow.cli.main import cli\n"
        "try:\n"
        "    cli.main(['--help'], standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('pyarrow', 'boto3', 'botocore', 'pydantic', 'ruamel', 'orjson')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    elapsed = time.perf_counter() - started
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "Commands:" in proc.stdout
    assert elapsed < 1.0, f"shardflow --help took {elapsed:.2f}s"


def test_public_api_is_exactly_what_all_names() -> None:
    assert sorted(shardflow.__all__) == sorted(
        [
            "ConfigError",
            "HandlerError",
            "InfrastructureError",
            "PermanentError",
            "ShardflowError",
            "TransientError",
            "batch_handler",
            "__version__",
        ]
    )
    for name in shardflow.__all__:
        assert hasattr(shardflow, name), name
    # submodules become attributes when imported; every other public name is in __all__
    public = {
        n
        for n, v in vars(shardflow).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public <= set(shardflow.__all__)


@pytest.mark.parametrize("path", sorted((REPO / "src" / "shardflow").rglob("*.py")), ids=str)
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 450, f"{path.relative_to(REPO)} has {lines} lines; split it by responsibility"
