"""The dashboard over HTTP (no browser): tokens, sessions, CSRF, headers, /metrics."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shardflow.dashboard.app import SESSION_COOKIE, create_app
from shardflow.dashboard.auth import (
    Identity,
    Sessions,
    generate_token_file,
    load_token_file,
)
from shardflow.errors import ConfigError
from shardflow.models import Job, JobStatus, Phase, Task, TaskStatus
from shardflow.statestore.sqlite import SqliteStateStore, open_sqlite_state

JOB = "job-a"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteStateStore]:
    store = open_sqlite_state(str(tmp_path / "state.db"))
    now = time.time()
    store.create_job(
        Job(
            JOB,
            'weird "name"\nwith newline',
            status=JobStatus.RUNNING,
            phase=Phase.MAP,
            created_at=now - 60,
            updated_at=now,
            total_tasks=2,
            total_items=20,
            config={"workspace": str(tmp_path), "config": {"backends": {"executor": "local"}}},
        )
    )
    store.register_tasks(
        [
            Task(JOB, "t000000", "b000000", status=TaskStatus.SUCCEEDED, items_total=10),
            Task(JOB, "t000001", "b000001", status=TaskStatus.PENDING, items_total=10),
        ]
    )
    store.add_counters(JOB, {"items.succeeded": 9, "items.failed": 1, "metrics.wall_ms": 2500})
    yield store
    store.close()


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.json"
    return path, generate_token_file(path)


@pytest.fixture
def client(state: SqliteStateStore, tokens: tuple[Path, dict[str, str]]) -> Iterator[TestClient]:
    app = create_app(state, load_token_file(tokens[0]), allowed_hosts=["dash.example.org"])
    with TestClient(app, base_url="http://127.0.0.1:8321") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_page_needs_a_token(client: TestClient) -> None:
    page = client.get(f"/jobs/{JOB}?x=1", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fjobs%2Fjob-a%3Fx%3D1"
    metrics = client.get("/metrics")
    assert metrics.status_code == 401
    assert metrics.headers["www-authenticate"] == "Bearer"
    assert client.get(
        "/", headers=bearer("sfo_not-a-real-token"), follow_redirects=False
    ).is_redirect
    assert client.get("/healthz").status_code == 200


def test_sign_in_sets_a_strict_http_only_session(
    client: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    wrong = client.post("/login", data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401
    assert "Unknown token" in wrong.text
    ok = client.post(
        "/login",
        data={"token": tokens[1]["readonly"], "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == "/"  # never an open redirect
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert client.get("/").status_code == 200
    for sneaky in ("/\t/evil.example/", "/\\evil.example", "https://evil.example/"):
        again = client.post(
            "/login", data={"token": tokens[1]["readonly"], "next": sneaky}, follow_redirects=False
        )
        assert again.headers["location"] == "/", sneaky


def test_pages_carry_a_strict_content_security_policy(
    client: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    page = client.get(f"/jobs/{JOB}", headers=bearer(tokens[1]["readonly"]))
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    # nothing on the page comes from another origin
    assert "http://" not in page.text.replace("http://127.0.0.1", "")
    assert "https://" not in page.text


def test_read_only_token_cannot_act_and_operator_can(
    client: TestClient, state: SqliteStateStore, tokens: tuple[Path, dict[str, str]]
) -> None:
    url = f"/jobs/{JOB}/actions/pause"
    assert client.post(url).status_code == 401
    refused = client.post(url, headers=bearer(tokens[1]["readonly"]))
    assert refused.status_code == 403
    job = state.get_job(JOB)
    assert job is not None
    assert not job.paused
    done = client.post(url, headers=bearer(tokens[1]["operator"]))
    assert done.status_code == 200
    assert done.text == f"paused {JOB}\n"
    job = state.get_job(JOB)
    assert job is not None
    assert job.paused
    assert [(e.kind, e.actor) for e in state.list_events(JOB)] == [("paused", "dashboard:operator")]
    again = client.post(url, headers=bearer(tokens[1]["operator"]))
    assert again.text == f"{JOB} was already paused\n"
    assert (
        client.post(
            f"/jobs/{JOB}/actions/explode", headers=bearer(tokens[1]["operator"])
        ).status_code
        == 404
    )


def _session(client: TestClient, token: str) -> str:
    client.post("/login", data={"token": token, "next": "/"}, follow_redirects=False)
    page = client.get(f"/jobs/{JOB}")
    marker = 'name="csrf" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


def test_session_actions_need_the_csrf_token_and_the_same_origin(
    client: TestClient, state: SqliteStateStore, tokens: tuple[Path, dict[str, str]]
) -> None:
    csrf = _session(client, tokens[1]["operator"])
    url = f"/jobs/{JOB}/actions/pause"
    assert client.post(url).status_code == 403
    assert client.post(url, data={"csrf": "0" * 64}).status_code == 403
    cross = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post(url, data={"csrf": csrf}, headers=cross).status_code == 403
    assert client.post(url, data={"csrf": csrf}, headers={"Origin": "null"}).status_code == 403
    job = state.get_job(JOB)
    assert job is not None
    assert not job.paused
    same = {"Origin": "http://127.0.0.1:8321", "Sec-Fetch-Site": "same-origin"}
    ok = client.post(url, data={"csrf": csrf}, headers=same, follow_redirects=False)
    assert ok.status_code == 303
    assert ok.headers["location"] == f"/jobs/{JOB}"
    flash = client.get(f"/jobs/{JOB}")
    assert f"paused {JOB}" in flash.text
    assert f"paused {JOB}" not in client.get(f"/jobs/{JOB}").text  # shown once


def test_sign_out_revokes_the_session_even_for_a_kept_cookie(
    client: TestClient, state: SqliteStateStore, tokens: tuple[Path, dict[str, str]]
) -> None:
    csrf = _session(client, tokens[1]["operator"])
    kept = client.cookies.get(SESSION_COOKIE)
    assert kept
    same = {"Origin": "http://127.0.0.1:8321", "Sec-Fetch-Site": "same-origin"}
    out = client.post("/logout", data={"csrf": csrf}, headers=same, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.set(SESSION_COOKIE, kept)  # the old cookie, copied before sign-out
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    url = f"/jobs/{JOB}/actions/pause"
    assert client.post(url, data={"csrf": csrf}, headers=same).status_code == 401
    job = state.get_job(JOB)
    assert job is not None
    assert not job.paused


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("127.0.0.1:8321", True),
        ("[::1]:8321", True),
        ("localhost:8321", True),
        ("dash.example.org", True),  # a name given with --allow-host
        ("DASH.example.org:8321", True),
        ("evil.example", False),  # DNS rebinding: the attacker's name, our address
        ("127.0.0.1.evil.example", False),
        ("", False),
    ],
)
def test_a_request_for_another_host_name_is_refused(
    client: TestClient, host: str, served: bool
) -> None:
    response = client.get("/healthz", headers={"Host": host})
    assert (response.status_code == 200) is served, response.text


def test_metrics_endpoint_is_valid_prometheus_text(
    client: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    response = client.get("/metrics", headers=bearer(tokens[1]["readonly"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    info = families["shardflow_job_info"].samples[0]
    assert info.labels["name"] == 'weird "name"\nwith newline'
    items = {
        s.labels["outcome"]: s.value
        for s in families["shardflow_job_items"].samples
        if s.name == "shardflow_job_items_total"
    }
    assert items == {"succeeded": 9, "failed": 1, "rejected": 0}
    wall = families["shardflow_job_wall_seconds"].samples[0]
    assert wall.value == pytest.approx(2.5)


def test_unknown_or_malformed_ids_are_not_found(
    client: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    h = bearer(tokens[1]["readonly"])
    assert client.get("/jobs/nope", headers=h).status_code == 404
    assert client.get("/jobs/..%2F..%2Fetc", headers=h).status_code == 404
    assert client.get(f"/jobs/{JOB}/tasks/t999999", headers=h).status_code == 404
    assert client.get(f"/jobs/{JOB}/tasks/..%2Fx/log/1", headers=h).status_code == 404
    assert client.get(f"/jobs/{JOB}/tasks?after=../x", headers=h).status_code == 404


def test_token_file_stores_hashes_only_and_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    plain = generate_token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert plain["operator"] not in text
    assert plain["readonly"] not in text
    tokens = load_token_file(path)
    assert tokens.lookup(plain["operator"]) == Identity("operator", "operator")
    assert tokens.lookup(plain["readonly"]) == Identity("readonly", "read")
    assert tokens.lookup(plain["readonly"] + "x") is None
    with pytest.raises(FileExistsError):
        generate_token_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_token_file(path)
    bad = tmp_path / "bad.json"
    bad.write_bytes(orjson.dumps({"tokens": [{"name": "x", "role": "admin", "sha256": "0" * 64}]}))
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="role"):
        load_token_file(bad)


def test_sessions_refuse_forged_and_expired_cookies() -> None:
    sessions = Sessions(b"k" * 32, ttl=60)
    cookie = sessions.issue(Identity("operator", "operator"), now=1000.0)
    who = sessions.verify(cookie, now=1001.0)
    assert who is not None
    assert who.can_operate
    assert sessions.verify(cookie, now=1061.0) is None
    forged = cookie.replace("|operator|", "|read|", 1)
    assert sessions.verify(forged, now=1001.0) is None
    assert Sessions(b"j" * 32).verify(cookie, now=1001.0) is None
    assert sessions.check_csrf(who, sessions.csrf_token(who))
    assert not sessions.check_csrf(who, "")
    assert sessions.check_csrf(Identity("operator", "operator"), None)  # bearer: no CSRF


def test_empty_or_odd_query_fields_fall_back_to_defaults(
    client: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    # a filter form submitted with empty fields, and hand-edited URLs, still render
    h = bearer(tokens[1]["readonly"])
    empty = f"/jobs/{JOB}/tasks?status=&error_class=&min_seconds=&sort=id&limit="
    assert client.get(empty, headers=h).text.count("data-task=") == 2
    assert client.get(f"/jobs/{JOB}/tasks?min_seconds=nan&limit=-5", headers=h).status_code == 200
    assert client.get("/?status=BOGUS&sort=nope&limit=x", headers=h).status_code == 200
    assert client.get(f"/jobs/{JOB}/tasks/t000000?attempt=abc", headers=h).status_code == 200
