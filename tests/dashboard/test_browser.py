"""The dashboard driven in headless Chromium, on a real finished quickstart job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shardflow.models import JobStatus
from tests.dashboard.conftest import (
    QUICKSTART_JOB,
    RUNNING_JOB,
    XSS_JOB,
    XSS_NAME,
    Workspace,
)


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


def sign_in(page: Any, base: str, token: str, path: str = "/") -> None:
    page.goto(base + path)
    assert page.url.startswith(base + "/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(base + path)


def test_pages_render_the_finished_quickstart_job(
    context: Any, dashboard_url: str, quickstart: Workspace
) -> None:
    page = context.new_page()
    sign_in(page, dashboard_url, quickstart.readonly)
    row = page.locator(f"tr[data-job={QUICKSTART_JOB}]")
    assert "quickstart-enrich-users" in row.inner_text()
    assert "SUCCEEDED" in row.inner_text()

    row.locator("a.job-link").click()
    page.wait_for_url(f"{dashboard_url}/jobs/{QUICKSTART_JOB}")
    assert page.inner_text("#job-name") == "quickstart-enrich-users"
    cards = page.inner_text(".cards")
    assert "1,995" in cards
    assert "of 2,000 input items" in cards
    # tasks by state, both charts drawn from the finished tasks, errors with samples
    assert "9" in page.inner_text("#task-states")
    assert page.locator("#chart-progress polyline").count() == 1
    assert page.locator("#chart-throughput rect.bar").count() >= 1
    errors = page.inner_text("#errors")
    assert "permanent" in errors
    failures = page.inner_text("#item-failures")
    assert "ValueError" in failures
    assert "not an email address" in failures
    assert page.locator("#slowest tbody tr, #slowest tr:has(td)").count() >= 5
    assert "local" in page.inner_text("#slots")
    assert "finished" in page.inner_text("#events")
    # signed in read-only: no action buttons at all
    assert page.locator("#actions").count() == 0
    assert page.locator("#actions-readonly").is_visible()


def test_a_filter_and_a_drill_down_work(
    context: Any, dashboard_url: str, quickstart: Workspace
) -> None:
    page = context.new_page()
    sign_in(page, dashboard_url, quickstart.readonly)
    page.select_option("#filter-status", "RUNNING")
    page.click("#job-filters button[type=submit]")
    page.wait_for_url("**status=RUNNING**")
    jobs = page.locator("#jobs tbody tr")
    assert jobs.count() == 1
    assert jobs.first.get_attribute("data-job") == RUNNING_JOB

    page.goto(f"{dashboard_url}/jobs/{QUICKSTART_JOB}/tasks")
    assert page.locator("#tasks tbody tr").count() == 9
    page.select_option("#filter-sort", "duration")
    page.click("#apply-filters")  # with the other fields left empty
    page.wait_for_url("**sort=duration**")
    took = page.locator("#tasks tbody tr td:nth-child(5)").all_inner_texts()
    assert len(took) == 9
    slowest = page.locator("#tasks tbody tr").first.get_attribute("data-task")

    page.locator("#tasks a.task-link").first.click()
    page.wait_for_url(f"**/tasks/{slowest}")
    assert page.inner_text("#task-id") == slowest
    assert "result committed" in page.inner_text("#attempts")
    assert "wall_ms" in page.inner_text("#task-metrics")
    # a clean task writes no log; the page says so
    assert "logged nothing" in page.inner_text("#no-log")


def test_actions_are_refused_without_the_operator_token(
    context: Any, chromium: Any, dashboard_url: str, quickstart: Workspace
) -> None:
    url = f"{dashboard_url}/jobs/{RUNNING_JOB}/actions/pause"
    # no token at all: refused, and the page asks to sign in
    anonymous = chromium.new_context()
    try:
        assert anonymous.request.post(url, form={"csrf": "x"}).status == 401
        page = anonymous.new_page()
        page.goto(f"{dashboard_url}/jobs/{RUNNING_JOB}")
        assert "/login" in page.url
    finally:
        anonymous.close()
    # the read-only token views but may not act, even with its own CSRF token
    page = context.new_page()
    sign_in(page, dashboard_url, quickstart.readonly, f"/jobs/{RUNNING_JOB}")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert context.request.post(url, form={"csrf": csrf}).status == 403
    state = quickstart.open_state()
    try:
        job = state.get_job(RUNNING_JOB)
        assert job is not None
        assert not job.paused
    finally:
        state.close()


def test_operator_pauses_and_resumes_a_running_job(
    context: Any, dashboard_url: str, quickstart: Workspace
) -> None:
    page = context.new_page()
    sign_in(page, dashboard_url, quickstart.operator, f"/jobs/{RUNNING_JOB}")
    # a POST without the session's CSRF token is refused even for the operator
    url = f"{dashboard_url}/jobs/{RUNNING_JOB}/actions/pause"
    assert context.request.post(url, form={"csrf": "forged"}).status == 403

    page.click("#action-pause")
    page.wait_for_selector("#flash")
    assert f"paused {RUNNING_JOB}" in page.inner_text("#flash")
    assert "PAUSED" in page.inner_text(".title-row")
    page.click("#action-resume")
    page.wait_for_selector("#flash")
    assert f"resumed {RUNNING_JOB}" in page.inner_text("#flash")
    state = quickstart.open_state()
    try:
        job = state.get_job(RUNNING_JOB)
        assert job is not None
        assert job.status is JobStatus.RUNNING
        assert not job.paused
        events = [(e.kind, e.actor) for e in state.list_events(RUNNING_JOB)]
    finally:
        state.close()
    assert ("paused", "dashboard:operator") in events
    assert ("resumed", "dashboard:operator") in events


def assert_no_injected_markup(page: Any) -> None:
    injected = page.locator("script:not([src]), img[src=x], svg[onload], b")
    assert injected.count() == 0


def test_a_job_named_like_a_script_renders_as_text(
    context: Any, dashboard_url: str, quickstart: Workspace
) -> None:
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, dashboard_url, quickstart.readonly)
    assert XSS_NAME in page.inner_text(f"tr[data-job={XSS_JOB}]")
    page.goto(f"{dashboard_url}/jobs/{XSS_JOB}")
    assert page.inner_text("#job-name") == XSS_NAME
    assert page.inner_text("#job-message") == "<b>bold</b> failure"
    assert "<img src=x onerror=alert(2)>" in page.inner_text("#errors")
    assert "<script>alert(3)</script>" in page.inner_text("#events")
    assert_no_injected_markup(page)
    page.goto(f"{dashboard_url}/jobs/{XSS_JOB}/tasks?status=FAILED")
    assert "<img src=x onerror=alert(2)>" in page.inner_text("#tasks")
    assert_no_injected_markup(page)
    page.goto(f"{dashboard_url}/jobs/{XSS_JOB}/tasks/t000000")
    log = page.inner_text("#log")
    assert "<script>alert(4)</script>" in log
    assert "<svg onload=alert(5)>" in log
    assert_no_injected_markup(page)
    page.goto(f"{dashboard_url}/jobs/{XSS_JOB}/tasks/t000000/log/2")
    assert "<svg onload=alert(5)>" in page.inner_text("body")
    assert dialogs == []
