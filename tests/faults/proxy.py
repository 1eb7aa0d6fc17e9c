"""A small HTTP fault proxy on 127.0.0.1 in front of the moto server.

It forwards each request to the upstream endpoint and, on a fixed seeded schedule,
answers some itself instead: S3 ``503 SlowDown`` in bursts, DynamoDB ``400
ThrottlingException``, or a connection reset (TCP RST) either before the request
reaches the server or after it was applied there (the response is lost). Which service
a request is for comes from its headers (``X-Amz-Target`` names DynamoDB and SQS).

The schedule is deterministic per service (every Nth request), so a test's faults do
not depend on timing; :attr:`FaultProxy.injected` counts what was done.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "content-length", "te"}
)
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>fault</RequestId></Error>"
)
THROTTLED = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
    b'"message":"Rate of requests exceeds the allowed throughput."}'
)


@dataclass(frozen=True)
class FaultPlan:
    """Every ``*_every``-th request of a service gets that fault (0 = never).

    ``s3_burst`` consecutive S3 requests get 503 SlowDown from each ``s3_slowdown_every``-th
    on. Resets alternate between "before forwarding" and "after the server applied it".
    """

    s3_slowdown_every: int = 0
    s3_burst: int = 3
    s3_reset_every: int = 0
    dynamodb_throttle_every: int = 0
    dynamodb_reset_every: int = 0
    sqs_reset_every: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.plan = plan
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.burst_left = 0
        self.enabled = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a reset connection is the point of the exercise, not an error

    def decide(self, service: str) -> str:
        """The fault for the next request of ``service`` ("" forwards it untouched)."""
        plan = self.plan
        with self.lock:
            if not self.enabled:
                return ""
            self.seen[service] += 1
            n = self.seen[service]
            fault = ""
            if service == "s3":
                if plan.s3_slowdown_every and n % plan.s3_slowdown_every == 0:
                    self.burst_left = plan.s3_burst
                if self.burst_left:
                    self.burst_left -= 1
                    fault = "slowdown"
                elif plan.s3_reset_every and n % plan.s3_reset_every == 0:
                    fault = "reset"
            elif service == "dynamodb":
                if plan.dynamodb_throttle_every and n % plan.dynamodb_throttle_every == 0:
                    fault = "throttle"
                elif plan.dynamodb_reset_every and n % plan.dynamodb_reset_every == 0:
                    fault = "reset"
            elif plan.sqs_reset_every and n % plan.sqs_reset_every == 0:
                fault = "reset"
            if fault == "reset":
                resets = (
                    self.injected[f"{service}_reset_before"]
                    + self.injected[f"{service}_reset_after"]
                )
                fault = "reset_after" if resets % 2 else "reset_before"
            if fault:
                self.injected[f"{service}_{fault}"] += 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _service(self) -> str:
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith("DynamoDB"):
            return "dynamodb"
        if target.startswith("AmazonSQS") or "Action=" in self.path:
            return "sqs"
        return "s3"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends RST, as a dropped connection or a dead node does
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response_only(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            send = body if body or self.command in ("PUT", "POST") else None
            conn.request(self.command, self.path, body=send, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _proxy(self) -> None:
        body = self._body()
        service = self._service()
        fault = self.server.decide(service)
        if fault == "reset_before":
            self._reset()
            return
        if fault == "slowdown":
            self._reply(503, SLOWDOWN, "application/xml")
            return
        if fault == "throttle":
            self._reply(400, THROTTLED, "application/x-amz-json-1.0")
            return
        status, reason, headers, data = self._forward(body)
        if fault == "reset_after":
            self._reset()
            return
        self.send_response_only(status, reason)
        length = str(len(data))
        for name, value in headers:
            low = name.lower()
            if low == "content-length" and self.command == "HEAD":
                length = value  # a HEAD's length is the object's, with no body sent
            elif low not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy


class FaultProxy:
    """Start with :meth:`start` (returns the proxy's endpoint URL); stop with :meth:`stop`."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        self._server = _Server(upstream, plan)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def injected(self) -> Counter[str]:
        with self._server.lock:
            return Counter(self._server.injected)

    @property
    def seen(self) -> Counter[str]:
        with self._server.lock:
            return Counter(self._server.seen)

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
