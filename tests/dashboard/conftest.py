"""Fixtures for the dashboard tests: a finished quickstart job, a served app, Chromium.

``quickstart`` runs the README's quickstart through the real command line once per
session and adds two hand-made jobs to the same state: one whose name and error
messages are HTML (to prove everything renders as text) and one still RUNNING (for the
actions). ``chromium`` launches Debian's Chromium through Playwright; it skips when no
browser is installed, and fails instead in CI (``CI=true`` or
``SHARDFLOW_REQUIRE_BROWSER=1``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shardflow.dashboard.auth import generate_token_file, load_token_file
from shardflow.layout import LocalPaths
from shardflow.models import ErrorClass, Event, Job, JobStatus, Phase, Task, TaskStatus
from shardflow.statestore.sqlite import SqliteStateStore, open_sqlite_state
from tests.e2e.helpers import REPO, run_json

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
XSS_NAME = "<script>alert(1)</script>"
XSS_JOB = "xss-job"
RUNNING_JOB = "running-job"
QUICKSTART_JOB = "qs"


def browser_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("SHARDFLOW_REQUIRE_BROWSER") == "1"


@dataclass(frozen=True)
class Workspace:
    root: Path
    state_path: Path
    tokens_path: Path
    operator: str
    readonly: str

    def open_state(self) -> SqliteStateStore:
        return open_sqlite_state(str(self.state_path))


def add_xss_job(state: SqliteStateStore, workspace: Path, now: float) -> None:
    """A failed job whose user-controlled text is all HTML."""
    job = Job(
        XSS_JOB,
        XSS_NAME,
        status=JobStatus.FAILED,
        phase=Phase.MAP,
        created_at=now - 120,
        updated_at=now - 60,
        total_tasks=2,
        total_items=20,
        message="<b>bold</b> failure",
        config={"workspace": str(workspace), "config": {"retry": {"max_attempts": 2}}},
    )
    state.create_job(job)
    state.register_tasks(
        [
            Task(
                XSS_JOB,
                "t000000",
                "b000000",
                status=TaskStatus.FAILED,
                attempt=2,
                items_total=10,
                error_class=ErrorClass.PERMANENT,
                error_message="<img src=x onerror=alert(2)>",
                started_at=now - 110,
                finished_at=now - 70,
            ),
            Task(
                XSS_JOB,
                "t000001",
                "b000001",
                status=TaskStatus.SUCCEEDED,
                attempt=1,
                result_attempt=1,
                items_total=10,
                items_succeeded=10,
                started_at=now - 100,
                finished_at=now - 90,
                metrics={"wall_ms": 10000.0, "user.<i>odd</i>": 1.0},
            ),
        ]
    )
    state.append_event(Event(XSS_JOB, "submitted", now - 120, "<script>alert(3)</script>"))
    log = LocalPaths(workspace, workspace / "scratch").log_file(XSS_JOB, "t000000", 2)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(
        '{"ts": 1.0, "level": "ERROR", "logger": "h", "msg": "<script>alert(4)</script>"}\n'
        "<svg onload=alert(5)>\n",
        encoding="utf-8",
    )


def add_running_job(state: SqliteStateStore, workspace: Path, now: float) -> None:
    """A job mid-run: two tasks done, one leased, one pending."""
    job = Job(
        RUNNING_JOB,
        "nightly-enrich",
        status=JobStatus.RUNNING,
        phase=Phase.MAP,
        created_at=now - 600,
        updated_at=now - 5,
        total_tasks=4,
        total_items=400,
        config={"workspace": str(workspace), "config": {"retry": {}}},
    )
    state.create_job(job)
    tasks = [
        Task(RUNNING_JOB, f"t{i:06d}", f"b{i:06d}", status=s, items_total=100)
        for i, s in enumerate(
            [TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.LEASED, TaskStatus.PENDING]
        )
    ]
    state.register_tasks(tasks)
    state.add_counters(RUNNING_JOB, {"items.succeeded": 200})


@pytest.fixture(scope="session")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("dash")
    job_file = REPO / "examples" / "quickstart" / "job.yaml"
    summary = run_json(["run", str(job_file), "--job-id", QUICKSTART_JOB], root, check=0)
    assert summary["status"] == "SUCCEEDED"
    workspace = root / ".shardflow"
    state = open_sqlite_state(str(workspace / "state.db"))
    try:
        now = time.time()
        add_xss_job(state, workspace, now)
        add_running_job(state, workspace, now)
    finally:
        state.close()
    tokens = workspace / "dashboard-tokens.json"
    plain = generate_token_file(tokens)
    return Workspace(root, workspace / "state.db", tokens, plain["operator"], plain["readonly"])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="session")
def dashboard_url(quickstart: Workspace) -> Iterator[str]:
    from shardflow.dashboard.app import create_app

    state = quickstart.open_state()
    app = create_app(state, load_token_file(quickstart.tokens_path))
    with serve(app) as url:
        yield url
    state.close()


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if browser_required():
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    if shutil.which(CHROMIUM) is None:
        if browser_required():
            pytest.fail(f"no browser at {CHROMIUM}: apt-get install -y chromium")
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
