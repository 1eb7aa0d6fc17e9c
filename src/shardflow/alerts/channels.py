"""Where alerts go: SMTP email, Slack incoming webhook, PagerDuty Events API v2, a generic
JSON webhook, or the watcher's own output.

Each channel's :meth:`~Channel.send` delivers one :class:`~shardflow.alerts.text.Notice`
or raises :class:`DeliveryError` saying why (never with the secret URL or key in the
message). HTTP channels accept only http(s) URLs and time out; nothing is retried here:
the watcher retries a failed delivery at its next pass.
"""

from __future__ import annotations

import http.client
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any, Protocol

import orjson

from shardflow.alerts.config import (
    ChannelConfig,
    EmailChannelConfig,
    LogChannelConfig,
    PagerDutyChannelConfig,
    SlackChannelConfig,
    WebhookChannelConfig,
)
from shardflow.alerts.text import RESOLVE, Notice, body, subject_line
from shardflow.errors import ShardflowError

PD_SEVERITIES = frozenset({"critical", "error", "warning", "info"})


class DeliveryError(ShardflowError):
    pass


class Channel(Protocol):
    name: str

    def send(self, notice: Notice) -> None: ...


def post_json(url: str, payload: dict[str, Any], *, timeout: float, headers: dict[str, str]) -> int:
    """POST ``payload`` as JSON; the HTTP status. DeliveryError for a non-2xx answer, a
    refused URL scheme or a network error (the URL is not repeated in the message)."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise DeliveryError(f"refusing a {scheme or 'relative'}: URL (use http or https)")
        request = urllib.request.Request(  # noqa: S310 (scheme checked above)
            url,
            data=orjson.dumps(payload),
            headers={"Content-Type": "application/json", "User-Agent": "shardflow", **headers},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code} from the receiver") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach the receiver: {reason}") from None
    except (http.client.InvalidURL, ValueError):  # their text repeats the URL
        raise DeliveryError(
            "the channel's URL is malformed (not shown: it holds a secret)"
        ) from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status} from the receiver")
    return status


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: Notice) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` (the fallback) and two blocks."""
    subject, text = subject_line(notice), body(notice)
    return {
        "text": _slack_escape(f"{subject}\n{text}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": subject[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(text)[:3000]}},
        ],
    }


def pagerduty_payload(notice: Notice, routing_key: str) -> dict[str, Any]:
    """An Events API v2 event: trigger with details, or resolve by the same dedup_key."""
    if notice.kind == RESOLVE:
        return {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": notice.dedup_key,
        }
    c = notice.condition
    severity = c.severity if c.severity in PD_SEVERITIES else "error"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notice.dedup_key,
        "payload": {
            "summary": f"{c.rule}: {c.what}"[:1024],
            "source": notice.source,
            "severity": severity,
            "timestamp": _iso(notice.since),
            "component": "shardflow",
            "group": c.subject,
            "class": c.rule,
            "custom_details": {
                "what": c.what,
                "which": c.subject,
                "job_name": c.job_name,
                "since": _iso(notice.since),
                "what_to_do": c.action,
                **{str(k): v for k, v in c.details.items()},
            },
        },
        "client": "shardflow",
        **({"client_url": notice.dashboard_url} if notice.dashboard_url else {}),
    }


def webhook_payload(notice: Notice) -> dict[str, Any]:
    c = notice.condition
    return {
        "event": notice.kind,
        "dedup_key": notice.dedup_key,
        "rule": c.rule,
        "severity": c.severity,
        "subject": c.subject,
        "job_name": c.job_name,
        "what": c.what,
        "what_to_do": c.action,
        "since": notice.since,
        "at": notice.at,
        "source": notice.source,
        "title": subject_line(notice),
        "text": body(notice),
        "details": dict(c.details),
    }


def _iso(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()


class SlackChannel:
    def __init__(self, cfg: SlackChannelConfig) -> None:
        self.name = str(cfg.name)
        self._url = cfg.secret_url()
        self._timeout = cfg.timeout

    def send(self, notice: Notice) -> None:
        post_json(self._url, slack_payload(notice), timeout=self._timeout, headers={})


class PagerDutyChannel:
    def __init__(self, cfg: PagerDutyChannelConfig) -> None:
        self.name = str(cfg.name)
        self._key = cfg.secret_routing_key()
        self._url = cfg.url
        self._timeout = cfg.timeout

    def send(self, notice: Notice) -> None:
        payload = pagerduty_payload(notice, self._key)
        post_json(self._url, payload, timeout=self._timeout, headers={})


class WebhookChannel:
    def __init__(self, cfg: WebhookChannelConfig) -> None:
        self.name = str(cfg.name)
        self._url = cfg.secret_url()
        self._headers = cfg.secret_headers()
        self._timeout = cfg.timeout

    def send(self, notice: Notice) -> None:
        post_json(self._url, webhook_payload(notice), timeout=self._timeout, headers=self._headers)


class EmailChannel:
    def __init__(self, cfg: EmailChannelConfig) -> None:
        self.name = str(cfg.name)
        self._cfg = cfg
        self._password = cfg.secret_password()

    def message(self, notice: Notice) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject_line(notice)
        msg["From"] = self._cfg.sender
        msg["To"] = ", ".join(self._cfg.to)
        msg["X-Shardflow-Dedup-Key"] = notice.dedup_key
        msg.set_content(body(notice) + "\n")
        return msg

    def send(self, notice: Notice) -> None:
        cfg = self._cfg
        try:
            smtp: smtplib.SMTP
            if cfg.ssl:
                smtp = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with smtp:
                if cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username:
                    smtp.login(cfg.username, self._password or "")
                smtp.send_message(self.message(notice))
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP {cfg.host}:{cfg.port}: {exc}") from None


class LogChannel:
    def __init__(self, cfg: LogChannelConfig, echo: Callable[[str], None] = print) -> None:
        self.name = str(cfg.name)
        self._echo = echo

    def send(self, notice: Notice) -> None:
        self._echo(f"{subject_line(notice)}\n{body(notice)}\n")


def build_channels(
    configs: list[ChannelConfig], echo: Callable[[str], None] = print
) -> list[Channel]:
    """Channels from their config; ConfigError if a secret's variable is unset."""
    out: list[Channel] = []
    for cfg in configs:
        if isinstance(cfg, SlackChannelConfig):
            out.append(SlackChannel(cfg))
        elif isinstance(cfg, PagerDutyChannelConfig):
            out.append(PagerDutyChannel(cfg))
        elif isinstance(cfg, WebhookChannelConfig):
            out.append(WebhookChannel(cfg))
        elif isinstance(cfg, EmailChannelConfig):
            out.append(EmailChannel(cfg))
        else:
            out.append(LogChannel(cfg, echo))
    return out
