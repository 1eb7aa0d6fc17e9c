"""Dashboard tokens, browser sessions and CSRF tokens.

Two roles: ``operator`` (view and act) and ``read`` (view only). A token file holds
named entries with the SHA-256 of each token, never the token itself, and must not be
readable by group or others (like an SSH key)::

    {"version": 1, "tokens": [{"name": "operator", "role": "operator", "sha256": "…"},
                              {"name": "readonly", "role": "read", "sha256": "…"}]}

:func:`generate_token_file` creates one with a fresh operator and read-only token and
returns the plain tokens, which are shown once. A browser signs in with a token and gets
a session cookie signed with a per-process secret (HMAC-SHA256); every form carries a
CSRF token derived from the session's nonce, checked on every POST. Scripts may send
``Authorization: Bearer <token>`` instead of a cookie; such requests need no CSRF token
because a browser never adds that header by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from shardflow.errors import ConfigError

OPERATOR = "operator"
READ = "read"
ROLES = frozenset({OPERATOR, READ})
SESSION_TTL = 12 * 3600.0
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from. ``nonce`` is set for cookie sessions (CSRF applies)."""

    name: str
    role: str
    nonce: str | None = None

    @property
    def can_operate(self) -> bool:
        return self.role == OPERATOR

    @property
    def actor(self) -> str:
        """How events recorded for this identity name it."""
        return f"dashboard:{self.name}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenSet:
    """Token hashes by name. :meth:`lookup` compares in constant time per entry."""

    entries: Mapping[str, tuple[str, str]]  # name → (role, sha256 hex)

    def lookup(self, token: str) -> Identity | None:
        if not token or len(token) > 512:
            return None
        digest = _digest(token)
        found: Identity | None = None
        for name, (role, expected) in self.entries.items():
            # no early exit, so timing does not tell which entry matched
            if hmac.compare_digest(digest, expected):
                found = Identity(name, role)
        return found


def _check_entry(raw: object, where: str) -> tuple[str, str, str]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each token entry must be a mapping")
    name, role, digest = raw.get("name"), raw.get("role"), raw.get("sha256")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK or len(name) > 64:
        raise ConfigError(f"{where}: token name {name!r} must be 1-64 of a-z A-Z 0-9 _ - . @")
    if role not in ROLES:
        raise ConfigError(f"{where}: token {name!r} has role {role!r}; use operator or read")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ConfigError(f"{where}: token {name!r} needs sha256 (64 hex digits)")
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise ConfigError(f"{where}: token {name!r}: sha256 is not hex") from None
    return name, str(role), digest.lower()


def load_token_file(path: Path) -> TokenSet:
    """Read a token file. Raises ConfigError if it is missing, readable by group or
    others, malformed, or holds no operator and no read token."""
    try:
        mode = path.stat().st_mode
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such token file") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the token file: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: token file is readable by others; run chmod 600 {path}")
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ConfigError(f'{path}: expected {{"version": 1, "tokens": [...]}}')
    entries: dict[str, tuple[str, str]] = {}
    for raw in data["tokens"]:
        name, role, digest = _check_entry(raw, str(path))
        if name in entries:
            raise ConfigError(f"{path}: token name {name!r} appears twice")
        entries[name] = (role, digest)
    if not entries:
        raise ConfigError(f"{path}: the token file has no tokens")
    return TokenSet(entries)


def generate_token_file(path: Path) -> dict[str, str]:
    """Create ``path`` (mode 0600, create-only) with a fresh operator and read-only
    token; return ``{"operator": token, "readonly": token}``. Only hashes are stored,
    so these plain tokens cannot be shown again. FileExistsError if ``path`` exists."""
    plain = {
        "operator": "sfo_" + secrets.token_urlsafe(32),
        "readonly": "sfr_" + secrets.token_urlsafe(32),
    }
    roles = {"operator": OPERATOR, "readonly": READ}
    body = {
        "version": 1,
        "tokens": [
            {"name": name, "role": roles[name], "sha256": _digest(tok)}
            for name, tok in plain.items()
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return plain


class Sessions:
    """Signed browser sessions and their CSRF tokens (a per-process secret, so every
    session ends when the dashboard restarts)."""

    def __init__(self, secret: bytes | None = None, *, ttl: float = SESSION_TTL) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self._ttl = ttl
        self._revoked: dict[str, float] = {}  # nonce → when its cookie would expire

    def revoke(self, identity: Identity, now: float | None = None) -> None:
        """End a cookie session for good (sign-out): its cookie, even kept or copied,
        is refused from now on. Bearer identities have no session to end."""
        if identity.nonce is None:
            return
        now = now if now is not None else time.time()
        self._revoked = {n: t for n, t in self._revoked.items() if t >= now}
        self._revoked[identity.nonce] = now + self._ttl

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, identity: Identity, now: float | None = None) -> str:
        """A cookie value for ``identity``: ``name|role|nonce|expiry|signature``."""
        expires = int((now if now is not None else time.time()) + self._ttl)
        payload = f"{identity.name}|{identity.role}|{secrets.token_hex(16)}|{expires}"
        return f"{payload}|{self._sign(payload)}"

    def verify(self, cookie: str | None, now: float | None = None) -> Identity | None:
        """The identity a cookie carries, or None if it is forged, malformed or expired."""
        if not cookie or len(cookie) > 512:
            return None
        payload, _, signature = cookie.rpartition("|")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        parts = payload.split("|")
        if len(parts) != 4 or parts[1] not in ROLES:
            return None
        name, role, nonce, expires = parts
        if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
            return None
        if nonce in self._revoked:
            return None
        return Identity(name, role, nonce)

    def csrf_token(self, identity: Identity) -> str:
        """The CSRF token forms of this session must carry ("" for bearer identities)."""
        if identity.nonce is None:
            return ""
        return self._sign(f"csrf|{identity.nonce}")

    def check_csrf(self, identity: Identity, submitted: str | None) -> bool:
        """True if the request may proceed: a bearer identity, or the session's token."""
        if identity.nonce is None:
            return True
        return bool(submitted) and hmac.compare_digest(self.csrf_token(identity), submitted or "")
