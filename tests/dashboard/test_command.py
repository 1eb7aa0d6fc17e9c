"""`shardflow dashboard` as a real process on the finished quickstart job."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import QUICKSTART_JOB, Workspace

COMMAND = (
    "from shardflow.cli.dashboard import dashboard; dashboard(prog_name='shardflow dashboard')"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None, f"the dashboard exited with {proc.returncode}"
        assert time.monotonic() < deadline, "the dashboard did not come up"
        time.sleep(0.1)


def test_dashboard_command_prints_tokens_once_and_serves_the_job(
    quickstart: Workspace, chromium: Any, tmp_path: Path
) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, "--port", str(port), "--token-file", str(tokens)],
        cwd=quickstart.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc)
        assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/jobs/{QUICKSTART_JOB}")
        assert "/login" in page.url
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
        context.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # stdout is not a terminal (a log file others may read): the tokens go to a 0600
    # file, and only its path is printed
    shown = tmp_path / "tokens.json.new-tokens.txt"
    assert f"the new tokens are in {shown} (mode 600)" in output
    assert "sfo_" not in output
    assert stat.S_IMODE(shown.stat().st_mode) == 0o600
    operator = re.search(r"operator \(view and act\): (sfo_\S+)", shown.read_text())
    readonly = re.search(r"read-only \(view\):\s+(sfr_\S+)", shown.read_text())
    assert operator is not None, output
    assert readonly is not None, output
    assert f"dashboard on {base}" in output
    assert operator.group(1) not in tokens.read_text()  # shown once, stored as a hash

    # a second start finds the file: no new tokens, the old ones still work
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND, "--port", str(port), "--token-file", str(tokens)],
        cwd=quickstart.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_up(f"{base}/healthz", proc)
        # a DNS-rebinding page reaches the server under the attacker's name: refused
        headers = {"Host": "evil.example:80"}
        rebound = urllib.request.Request(f"{base}/login", headers=headers)  # noqa: S310
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebound, timeout=5)  # noqa: S310 (loopback)
        assert refused.value.code == 400
        context = chromium.new_context()
        page = context.new_page()
        page.goto(f"{base}/jobs/{QUICKSTART_JOB}")
        page.fill("#token", readonly.group(1))
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/jobs/{QUICKSTART_JOB}")
        assert page.inner_text("#job-name") == "quickstart-enrich-users"
        context.close()
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "sfo_" not in output
