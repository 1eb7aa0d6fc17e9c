"""Masking credentials, tokens and secret fields before text is logged or stored.

A :class:`Redactor` replaces with ``***``:

1. the values of this process's secret environment variables: names containing
   ``SECRET``, ``TOKEN``, ``PASSWORD``, ``PASSWD``, ``CREDENTIAL``, ``API_KEY``,
   ``PRIVATE_KEY``, ``WEBHOOK`` or ``ROUTING_KEY`` (``SLACK_WEBHOOK_URL``, ``PD_ROUTING_KEY``)
   (``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN`` among them), values of at least
   :data:`MIN_SECRET_LENGTH` characters, read when the redactor is built;
2. patterns: AWS access key ids (``AKIA…``/``ASIA…``, the prefix is kept),
   ``aws_secret_access_key = …``, ``Authorization: Bearer …`` (and ``X-Api-Key``),
   ``password=…``/``token=…``/``secret=…``/``api_key=…`` pairs in text and quoted keys in
   JSON or Python reprs (``"password": "…"``), URLs with a password
   (``scheme://user:***@host``), PEM private keys, and the well-known token formats of
   :data:`TOKEN_FORMATS` (Slack, GitHub, GitLab, Stripe, Google, npm, PyPI, SendGrid,
   JWTs), their prefix kept; ``password: …`` and ``api_key: …`` with a colon too;
3. with :meth:`Redactor.for_record`, the values of the record fields named in the job's
   ``secrets:`` list (at least :data:`MIN_FIELD_VALUE_LENGTH` characters).

:class:`RedactingFilter` applies a redactor to every log record (message, arguments,
exception text); :mod:`shardflow.observability.logging` attaches one to each handler it
creates. The cost is one precompiled regular expression per line, 2 to 3 µs for a
typical 100-character line (measured in ``tests/security/test_redact.py``).

Configs: :func:`check_no_embedded_credentials` refuses a config that carries
credentials (secrets belong in the AWS provider chain, not in configs), and
:func:`redact_config` makes the copies of a config that are shown or stored for display.
"""

from __future__ import annotations

import json
import logging
import os
import re
import string
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from shardflow.errors import ConfigError, ConfigProblem, UsageError
from shardflow.security.tokens import TOKEN_FORMATS, token_branches

MASK = "***"
MIN_SECRET_LENGTH = 6
MIN_FIELD_VALUE_LENGTH = 4
SECRET_ENV_WORDS = (
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "API_KEY",
    "PRIVATE_KEY",
    "WEBHOOK",  # SLACK_WEBHOOK_URL: the URL is the credential
    "ROUTING_KEY",  # PD_ROUTING_KEY (PagerDuty Events API)
)

__all__ = [
    "MASK",
    "TOKEN_FORMATS",
    "EmbeddedCredentialsError",
    "RedactingFilter",
    "Redactor",
    "check_no_embedded_credentials",
    "is_secret_env_name",
    "mask_patterns",
    "redact_config",
]

# Keys whose values are secret end with one of these words ("tokens=5" does not match).
_KEYS = (
    r"(?:passw(?:or)?d|passphrase|pwd|secret(?:[_-]?key)?|token|api[_-]?key|apikey"
    r"|credentials?|access[_-]?key|private[_-]?key|auth[_-]?key)"
)
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"


def _pair(group: str, separators: str = "=") -> str:
    """One of ``separators`` then the value (quoted, or up to a separator) as ``group``."""
    return rf"\s*[{separators}]\s*(?P<{group}>{_QUOTED}|[^\s\"'&,;)}}\]]+)"


def _header(group: str) -> str:
    """``:`` or ``=``, an optional auth scheme, then the credential as ``group``."""
    return (
        r"[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?"
        rf"(?P<{group}>[^\s\"',;]+)"
    )


def _quoted_key(quote: str, group: str) -> str:
    """``"…password": value`` (JSON) or ``'…password': value`` (a Python repr)."""
    return rf"{quote}[\w.-]*?{_KEYS}{quote}\s*:\s*(?P<{group}>{_QUOTED}|[^\s,}}\]]+)"


# One expression, compiled once and run over the ASCII-lowercased line, so no branch
# needs IGNORECASE. Every branch starts with a literal character, which lets the regex
# engine skip positions that cannot start a match: about 2 µs per 100-character line.
# The group to mask is the last one of each branch; what precedes it is kept.
_PATTERN = re.compile(
    # PEM private keys, also when cut short (a truncated error message)
    r"-(?P<pem>----begin [a-z0-9 ]*private key-----(?s:.*?)"
    r"(?:-----end [a-z0-9 ]*private key-----|\Z))"
    # scheme://user:password@host: the password, up to the last @ of the authority
    r"|://[^\s/?#@:\"'<>]*:(?P<url>[^\s/?#\"'<>]+)(?=@)"
    # AWS access key ids (AKIA long-term, ASIA session): the kind is kept
    r"|a(?:kia|sia|bia|cca)(?P<akid>[a-z0-9]{16})\b"
    # headers and AWS credential-file keys, with ':' or '='
    r"|a(?:uthorization|ws_secret_access_key|ws_session_token|ws_security_token)"
    + _header("h1")
    + r"|proxy-authorization"
    + _header("h2")
    + r"|x-(?:api-key|auth-token)"
    + _header("h3")
    + r"|bearer\s+(?P<bearer>[a-z0-9._~+/=-]{6,})"
    + "|"
    + _quoted_key('"', "q1")
    + "|"
    + _quoted_key("'", "q2")
    # well-known token formats (TOKEN_FORMATS)
    + token_branches()
    # password=…, password: …, token = "…": in free text and in URLs' query strings
    + r"|p(?:assw(?:or)?d|assphrase|wd|rivate[_-]?key)"
    + _pair("k1", "=:")
    + r"|secret(?:[_-]?key)?"
    + _pair("k2")
    + r"|token"
    + _pair("k3")
    + r"|a(?:pi[_-]?key|pikey|ccess[_-]?key|uth[_-]?key)"
    + _pair("k4", "=:")
    + r"|credentials?"
    + _pair("k5")
)
_PEM_MASK = f"-----BEGIN PRIVATE KEY-----{MASK}-----END PRIVATE KEY-----"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def mask_patterns(text: str) -> str:
    """``text`` with the secret patterns (not literal values) masked."""
    # str.lower() keeps the length of ASCII text; other text is lowered ASCII-only so
    # that positions in the lowered copy are positions in the original
    lower = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
    pieces: list[str] = []
    last = 0
    for match in _PATTERN.finditer(lower):
        group = match.lastgroup or ""
        if group == "pem":
            start, end = match.span()
            replacement = _PEM_MASK
        else:
            start, end = match.span(group)
            if group == "akid" and not _is_access_key_id(text, match.start(), end):
                continue
            quote = text[start] if text[start] in "\"'" else ""
            replacement = f"{quote}{MASK}{quote}"
        pieces.append(text[last:start])
        pieces.append(replacement)
        last = end
    if not pieces:
        return text
    pieces.append(text[last:])
    return "".join(pieces)


def _is_access_key_id(text: str, start: int, end: int) -> bool:
    # access key ids are upper case and stand alone (the scan ran on lowered text)
    return text[start:end].isupper() and not (start and text[start - 1].isalnum())


def is_secret_env_name(name: str) -> bool:
    """Whether an environment variable's value is treated as a secret."""
    upper = name.upper()
    return any(word in upper for word in SECRET_ENV_WORDS)


def _variants(value: str) -> set[str]:
    """``value`` as it may appear in text: as is, and escaped by repr() and JSON."""
    found = {
        value,
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return {v for v in found if v}


def _field_values(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for child in value.values():
            yield from _field_values(child)
    elif isinstance(value, list | tuple):
        for child in value:
            yield from _field_values(child)


class Redactor:
    """Masks secrets in text; see the module docstring for what is masked.

    Immutable once built and safe to share between threads. :meth:`redact` never
    raises for any ``str``; it returns the input object itself when nothing matched.
    """

    __slots__ = ("_literals",)

    def __init__(self, literals: Iterable[str] = ()) -> None:
        """``literals``: exact secret values to mask wherever they appear (empty ones
        are ignored). Longer values are masked first so a value containing another is
        masked whole."""
        found: set[str] = set()
        for value in literals:
            if value:
                found |= _variants(value)
        self._literals: tuple[str, ...] = tuple(sorted(found, key=len, reverse=True))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """A redactor for the secret environment variables of ``environ`` (default:
        this process's), as they are now."""
        env = os.environ if environ is None else environ
        return cls(
            value
            for name, value in env.items()
            if len(value) >= MIN_SECRET_LENGTH and is_secret_env_name(name)
        )

    @property
    def literals(self) -> tuple[str, ...]:
        return self._literals

    def with_values(self, values: Iterable[str]) -> Redactor:
        """This redactor plus the exact ``values``."""
        return Redactor((*self._literals, *values))

    def for_record(self, record: Mapping[str, Any] | None, fields: Sequence[str]) -> Redactor:
        """This redactor plus the values of ``record``'s secret ``fields`` (strings and
        numbers of at least :data:`MIN_FIELD_VALUE_LENGTH` characters, nested ones too).
        Returns ``self`` when there is nothing to add."""
        if not record or not fields:
            return self
        values = [
            text
            for name in fields
            if name in record
            for text in _field_values(record[name])
            if len(text) >= MIN_FIELD_VALUE_LENGTH
        ]
        return self.with_values(values) if values else self

    def redact(self, text: str) -> str:
        """``text`` with every secret masked as ``***``."""
        # literals first: a pattern could otherwise mask part of a literal and leave
        # the rest of it readable
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, MASK)
        return mask_patterns(text)

    def redact_data(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted (keys are kept)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {key: self.redact_data(child) for key, child in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_data(child) for child in value]
        return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record's message, arguments and exception text.

    It formats the message once (``msg % args``), redacts it and stores the result as
    ``msg`` with no ``args``; the formatted traceback is redacted into ``exc_text``,
    which formatters must prefer to formatting ``exc_info`` again. It never drops a
    record and never raises: a message whose arguments do not fit its format string is
    kept, redacted, with its arguments dropped.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor.from_environ()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_shardflow_redacted", False):
            return True  # the same record reaches several handlers: redact it once
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError) as exc:
            # logging would print the raw arguments to stderr; say what happened instead
            message = f"{record.msg} [log arguments dropped: {type(exc).__name__}]"
        record.msg = redact(message)
        record.args = None
        # another handler's formatter may have cached the plain text in exc_text already
        text = record.exc_text
        if not text and record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(record.exc_info[1]))
        if text:
            record.exc_text = redact(text.rstrip("\n"))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._shardflow_redacted = True
        return True


class EmbeddedCredentialsError(ConfigError, UsageError):
    """A config carries credentials: refused at submit (exit 2).

    A :class:`~shardflow.errors.ConfigError` that is also a
    :class:`~shardflow.errors.UsageError`, so commands that report usage errors with
    exit code 2 report it the same way."""


_SETUP_ASSIGNMENT = re.compile(r"(?:^|[\s;&|])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def _leaves(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from _leaves(child, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            yield from _leaves(child, f"{path}[{index}]")


def _url_userinfo(value: str) -> tuple[bool, bool]:
    """(has a user, has a password) of a URL-looking string."""
    if "://" not in value:
        return False, False
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return False, False
    return "@" in parts.netloc, parts.password is not None


def check_no_embedded_credentials(config: Mapping[str, Any]) -> None:
    """Refuse a job config (its ``model_dump(mode="json")``) that carries credentials.

    Refused, each named by its dotted path with the secret masked: any ``backends`` URL
    with user information (``https://user:pass@host``: AWS credentials come only from the
    provider chain), any other URL with a password, and ``slurm.setup`` lines that set a
    secret-named variable to a literal value. Raises :class:`EmbeddedCredentialsError`.
    """
    redactor = Redactor()
    problems: list[ConfigProblem] = []
    for path, value in _leaves(config, ""):
        has_user, has_password = _url_userinfo(value)
        if path.startswith("backends.") and has_user:
            problems.append(
                ConfigProblem(
                    "<config>",
                    None,
                    None,
                    path,
                    f"credentials in the URL {redactor.redact(value)!r} are not allowed: "
                    "give AWS credentials through the provider chain (a profile, "
                    "an instance or task role, or the AWS_* environment variables)",
                )
            )
        elif has_password:
            problems.append(
                ConfigProblem(
                    "<config>",
                    None,
                    None,
                    path,
                    f"the URL {redactor.redact(value)!r} carries a password: "
                    "secrets do not belong in job configs",
                )
            )
    setup = (config.get("slurm") or {}).get("setup") or []
    for index, line in enumerate(setup):
        for name, literal in _SETUP_ASSIGNMENT.findall(str(line)):
            if is_secret_env_name(name) and not literal.lstrip("\"'").startswith("$"):
                problems.append(
                    ConfigProblem(
                        "<config>",
                        None,
                        None,
                        f"slurm.setup[{index}]",
                        f"sets {name} to a literal secret: read it on the node instead, "
                        f'e.g. export {name}="$(cat ~/.config/shardflow/{name.lower()})"',
                    )
                )
    if problems:
        raise EmbeddedCredentialsError(problems)


def redact_config(config: Mapping[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    """A copy of a job config (or of a job's config snapshot, which holds it under
    ``config``) for display and manifests: every string redacted (patterns and the
    secret environment values of ``redactor``, default this process's), and the value of
    every key named in the config's ``secrets`` list (by leaf name or dotted path)
    replaced with ``***``. The input is not changed; use the original to run the job."""
    redactor = redactor if redactor is not None else Redactor.from_environ()
    inner = config.get("config")
    source = inner if isinstance(inner, Mapping) else config
    secret_keys = {str(k) for k in source.get("secrets") or ()}
    return _redact_tree(config, redactor, secret_keys, "")  # type: ignore[no-any-return]


def _redact_tree(value: Any, redactor: Redactor, secret_keys: set[str], path: str) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            relative = child_path.removeprefix("config.")
            if secret_keys and (str(key) in secret_keys or relative in secret_keys):
                out[key] = MASK if child is not None else None
            else:
                out[key] = _redact_tree(child, redactor, secret_keys, child_path)
        return out
    if isinstance(value, list | tuple):
        return [_redact_tree(child, redactor, secret_keys, path) for child in value]
    if isinstance(value, str):
        return redactor.redact(value)
    return value
