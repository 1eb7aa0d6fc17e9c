"""Local receivers for alert delivery: an SMTP server and HTTP endpoints that check the
payload shapes Slack and PagerDuty accept (answering 400 to anything else, as they do).

Everything listens on 127.0.0.1 on a free port and stops when its test ends.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import orjson
import pytest

PD_ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
PD_SEVERITIES = frozenset({"critical", "error", "warning", "info"})
SLACK_BLOCKS = frozenset({"header", "section", "context", "divider", "actions"})


def pagerduty_problems(body: Any) -> list[str]:
    """What the Events API v2 would refuse in ``body`` (empty when it is valid)."""
    problems = []
    if not isinstance(body, dict):
        return ["body is not an object"]
    if not isinstance(body.get("routing_key"), str) or not body["routing_key"]:
        problems.append("routing_key missing")
    if body.get("event_action") not in PD_ACTIONS:
        problems.append("event_action invalid")
    key = body.get("dedup_key")
    if body.get("event_action") != "trigger" and not key:
        problems.append("dedup_key required for resolve")
    if key is not None and (not isinstance(key, str) or len(key) > 255):
        problems.append("dedup_key invalid")
    if body.get("event_action") == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "payload missing"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            problems.append("payload.summary invalid")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("payload.source missing")
        if payload.get("severity") not in PD_SEVERITIES:
            problems.append("payload.severity invalid")
    return problems


def slack_problems(body: Any) -> list[str]:
    """What an incoming webhook would refuse in ``body``."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    problems = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        problems.append("text missing")
    for block in body.get("blocks", []):
        if block.get("type") not in SLACK_BLOCKS:
            problems.append(f"unknown block {block.get('type')!r}")
        text = block.get("text") or {}
        if text.get("type") not in ("plain_text", "mrkdwn") or not text.get("text"):
            problems.append("block text invalid")
        if block.get("type") == "header" and len(text.get("text", "")) > 150:
            problems.append("header too long")
    return problems


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class HttpReceiver:
    base: str
    requests: list[Received] = field(default_factory=list)
    fail_next: dict[str, int] = field(default_factory=dict)  # path → answers of 500 to give

    def at(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.path == path]


def _handler(receiver: HttpReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output clean

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._answer(400, b"invalid_payload")
                return
            receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            if receiver.fail_next.get(self.path, 0) > 0:
                receiver.fail_next[self.path] -= 1
                self._answer(500, b"try later")
                return
            if self.path == "/slack":
                problems = slack_problems(body)
                self._answer(
                    400 if problems else 200, b"; ".join(p.encode() for p in problems) or b"ok"
                )
            elif self.path == "/pagerduty":
                problems = pagerduty_problems(body)
                answer = (
                    {"status": "invalid event", "errors": problems}
                    if problems
                    else {"status": "success", "dedup_key": body.get("dedup_key")}
                )
                self._answer(400 if problems else 202, orjson.dumps(answer))
            else:
                self._answer(204, b"")

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver("")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join(10)


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox("127.0.0.1", _free_port())
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    yield box
    controller.stop()
