"""The words of an alert: what, which job, since when, what to do.

One :class:`Notice` becomes a subject and a plain-text body that every channel uses
(Slack and PagerDuty get the same facts in their own payload shapes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shardflow.alerts.rules import Condition

TRIGGER, RESOLVE = "trigger", "resolve"


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to send: a condition firing (again) or clearing."""

    kind: str  # TRIGGER | RESOLVE
    condition: Condition
    since: float  # when the condition began
    at: float  # now
    source: str  # which watcher says so
    dashboard_url: str | None = None

    @property
    def dedup_key(self) -> str:
        return f"shardflow/{self.condition.key}"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _span(seconds: float) -> str:
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 60 else f"{_span(seconds)} ago"


def subject_of(condition: Condition) -> str:
    """``job NAME (ID)`` or ``host NAME``."""
    if condition.subject.startswith("host:"):
        return f"host {condition.subject.removeprefix('host:')}"
    if condition.job_name and condition.job_name != condition.subject:
        return f"job {condition.job_name} ({condition.subject})"
    return f"job {condition.subject}"


def subject_line(notice: Notice) -> str:
    c = notice.condition
    if notice.kind == RESOLVE:
        return f"[shardflow] RESOLVED {c.rule}: {subject_of(c)}"
    return f"[shardflow] {c.severity.upper()} {c.rule}: {subject_of(c)}"


def body(notice: Notice) -> str:
    """The plain-text body: four labelled lines, then where to look."""
    c = notice.condition
    lines = []
    if notice.kind == RESOLVE:
        lines += [
            f"Resolved: {c.rule} cleared at {_when(notice.at)}.",
            f"Which: {subject_of(c)}",
            f"Since: {_when(notice.since)} (lasted {_span(notice.at - notice.since)})",
            f"Was: {c.what}",
        ]
    else:
        lines += [
            f"What: {c.what}",
            f"Which: {subject_of(c)}",
            f"Since: {_when(notice.since)} ({_ago(notice.at - notice.since)})",
            f"What to do: {c.action}",
        ]
    if notice.dashboard_url and not c.subject.startswith("host:"):
        lines.append(f"Dashboard: {notice.dashboard_url.rstrip('/')}/jobs/{c.subject}")
    lines.append(f"Reported by: {notice.source}")
    return "\n".join(lines)
