"""Small web helpers for the dashboard: the template environment, query strings, the
same-origin check and form parsing (without python-multipart)."""

from __future__ import annotations

import ipaddress
import math
import urllib.parse
from collections.abc import Collection
from pathlib import Path
from typing import Any

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from shardflow.dashboard import fmt

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 16 * 1024


def template_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=fmt.duration,
        count=fmt.count,
        grouped=fmt.grouped,
        size=fmt.size,
        ts=fmt.timestamp,
        iso=fmt.iso,
        pct=lambda v: f"{100.0 * float(v or 0):.1f}%",
    )
    env.globals["qs"] = qs
    return env


def qs(path: str, **params: Any) -> str:
    """``path`` with the non-empty ``params`` as its query string."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urllib.parse.urlencode(kept)}" if kept else path


def number(text: str | None) -> float | None:
    """A query value as a number; None when empty or not a finite number (a form sends
    empty fields, and a hand-edited URL may hold anything: neither is an error page)."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def page_size(text: str | None, default: int = 50, most: int = 500) -> int:
    value = number(text)
    return default if value is None else max(1, min(int(value), most))


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this site, else ``/``: "//host", "https://…", and
    paths with backslashes or control characters (browsers drop tabs and newlines, so
    "/<tab>/host" would become "//host") would make the sign-in an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if any(ch == "\\" or ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return "/"
    return value


def query_suffix(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


def same_origin(request: Request) -> bool:
    """False for a request a browser marks as coming from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's cross-site form post (those always say Origin)
        return True
    if origin == "null":
        return False
    return urllib.parse.urlsplit(origin).netloc == request.headers.get("host", "")


async def read_form(request: Request) -> dict[str, str]:
    """A url-encoded form body (first value of each field); oversized bodies are cut."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
    return {k: v[0] for k, v in fields.items() if v}


def host_allowed(header: str, names: Collection[str]) -> bool:
    """Whether a Host header names this server: an IP address literal (DNS rebinding
    needs a name), ``localhost``, or one of ``names`` (compared without case or port)."""
    host = header.strip().lower()
    if host.startswith("["):  # [IPv6]:port
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or host in {n.lower() for n in names}
    return True
