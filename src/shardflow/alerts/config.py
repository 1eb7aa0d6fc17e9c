"""``alerts.yaml``: which rules fire, at what thresholds, and where alerts go.

Every key has a default, so an empty file (or none) watches with the default rules and
prints alerts to the terminal. Unknown keys are errors. Secrets (an SMTP password, a
Slack webhook URL, a PagerDuty routing key, webhook headers) should be given as the
*name of an environment variable* (``*_env`` keys) so the file can be shared; a
literal value works too but is never logged. Example::

    suppress: 1h                  # repeat an open alert at most this often
    dashboard_url: http://127.0.0.1:8321
    rules:
      stalled: {after: 20m}
      error_rate: {above_percent: 5, window: 15m, min_items: 200}
      disk: {min_free_percent: 5}
    channels:
      - {type: slack, url_env: SLACK_WEBHOOK_URL}
      - {type: pagerduty, routing_key_env: PD_ROUTING_KEY}
      - {type: email, host: smtp.example.org, port: 587, starttls: true,
         username: alerts, password_env: SMTP_PASSWORD,
         from: shardflow@example.org, to: [oncall@example.org]}
      - {type: webhook, url: https://hooks.example.org/shardflow}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shardflow.configtypes import Duration
from shardflow.errors import ConfigError, ConfigProblem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StalledRule(_Strict):
    """No item or task finished for ``after`` while the job runs and is not paused.
    Set ``after`` above your longest task: counters move when a task commits."""

    enabled: bool = True
    after: Duration = 900.0


class ErrorRateRule(_Strict):
    """Failed items above ``above_percent`` of the items finished within ``window``."""

    enabled: bool = True
    above_percent: float = Field(default=5.0, ge=0, le=100)
    window: Duration = 900.0
    min_items: int = Field(default=100, ge=1)


class FailureBudgetRule(_Strict):
    """Failed items reached ``at_fraction`` of what the job tolerates
    (``retry.tolerated_failure_percent`` or ``_count``)."""

    enabled: bool = True
    at_fraction: float = Field(default=0.8, gt=0, le=1)


class RateLimitRule(_Strict):
    """A limit's workers wait for tokens: ``min_waiting_workers`` wait while the bucket
    holds at most ``max_free_fraction`` of its burst, or attempts spent at least
    ``wait_fraction`` of their wall time waiting within the last ``window``."""

    enabled: bool = True
    min_waiting_workers: int = Field(default=1, ge=1)
    max_free_fraction: float = Field(default=0.05, ge=0, le=1)
    wait_fraction: float = Field(default=0.5, gt=0, le=1)
    window: Duration = 900.0


class InfraRule(_Strict):
    """Infrastructure errors (storage, network, preemption): tasks waiting to retry or
    failed with that class, or item failures of that class within ``window``."""

    enabled: bool = True
    at_least: int = Field(default=1, ge=1)
    window: Duration = 900.0


class DiskRule(_Strict):
    enabled: bool = True
    min_free_percent: float = Field(default=10.0, ge=0, le=100)


class MemoryRule(_Strict):
    enabled: bool = True
    min_available_percent: float = Field(default=10.0, ge=0, le=100)


class JobFailedRule(_Strict):
    """A job ended FAILED within ``recent`` (older failures are not news)."""

    enabled: bool = True
    recent: Duration = 86400.0


class Rules(_Strict):
    stalled: StalledRule = Field(default_factory=StalledRule)
    error_rate: ErrorRateRule = Field(default_factory=ErrorRateRule)
    failures_near_limit: FailureBudgetRule = Field(default_factory=FailureBudgetRule)
    rate_limit_saturated: RateLimitRule = Field(default_factory=RateLimitRule)
    infrastructure_errors: InfraRule = Field(default_factory=InfraRule)
    disk: DiskRule = Field(default_factory=DiskRule)
    memory: MemoryRule = Field(default_factory=MemoryRule)
    job_failed: JobFailedRule = Field(default_factory=JobFailedRule)


class _Channel(_Strict):
    name: str | None = None
    timeout: Duration = 10.0


def _secret(value: str | None, env: str | None, what: str) -> str:
    if value:
        return value
    if env:
        found = os.environ.get(env)
        if found:
            return found
        raise ConfigError(f"{what}: environment variable {env} is not set")
    raise ConfigError(f"{what}: give it or the name of an environment variable (*_env)")


class EmailChannelConfig(_Channel):
    type: Literal["email"]
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)

    def secret_password(self) -> str | None:
        if self.username is None:
            return None
        return _secret(self.password, self.password_env, f"channel {self.name}: password")


class SlackChannelConfig(_Channel):
    type: Literal["slack"]
    url: str | None = None
    url_env: str | None = None

    def secret_url(self) -> str:
        return _secret(self.url, self.url_env, f"channel {self.name}: url")


class PagerDutyChannelConfig(_Channel):
    type: Literal["pagerduty"]
    routing_key: str | None = None
    routing_key_env: str | None = None
    url: str = "https://events.pagerduty.com/v2/enqueue"

    def secret_routing_key(self) -> str:
        return _secret(self.routing_key, self.routing_key_env, f"channel {self.name}: key")


class WebhookChannelConfig(_Channel):
    type: Literal["webhook"]
    url: str | None = None
    url_env: str | None = None
    headers: dict[str, str] = {}
    headers_env: dict[str, str] = {}  # header name → environment variable holding its value

    def secret_url(self) -> str:
        return _secret(self.url, self.url_env, f"channel {self.name}: url")

    def secret_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        for header, env in self.headers_env.items():
            out[header] = _secret(None, env, f"channel {self.name}: header {header}")
        return out


class LogChannelConfig(_Channel):
    """Print alerts to the watcher's output (the default when no channel is set)."""

    type: Literal["log"]


ChannelConfig = Annotated[
    EmailChannelConfig
    | SlackChannelConfig
    | PagerDutyChannelConfig
    | WebhookChannelConfig
    | LogChannelConfig,
    Field(discriminator="type"),
]


def _default_channels() -> list[ChannelConfig]:
    return [LogChannelConfig(type="log")]


class AlertsConfig(_Strict):
    suppress: Duration = 3600.0
    jobs: int = Field(default=20, ge=1, le=500)  # how many recent jobs a pass looks at
    source: str | None = None  # names this watcher in alerts (default: the host name)
    dashboard_url: str | None = None
    rules: Rules = Field(default_factory=Rules)
    channels: list[ChannelConfig] = Field(default_factory=_default_channels)

    def model_post_init(self, context: Any, /) -> None:
        seen: set[str] = set()
        for i, channel in enumerate(self.channels):
            if channel.name is None:
                channel.name = f"{channel.type}-{i + 1}"
            if channel.name in seen:
                raise ConfigError(f"two alert channels are named {channel.name!r}")
            seen.add(channel.name)


def load_alerts_config(path: Path | None) -> AlertsConfig:
    """Read ``path`` (None: the defaults). Raises ConfigError naming file, line and key
    for every problem found."""
    if path is None:
        return AlertsConfig()
    from shardflow.configyaml import read_file

    problems: list[ConfigProblem] = []
    layer = read_file(path, str(path), "file", problems)
    if problems:
        raise ConfigError(problems)
    try:
        return AlertsConfig.model_validate(layer.data)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, int | str))
            where = [p for p in loc if not (isinstance(p, str) and p in _CHANNEL_TAGS)]
            src = layer.locate(tuple(where))
            field = ".".join(str(p) for p in where)
            out.append(ConfigProblem(str(path), src.line, src.column, field, err["msg"]))
        raise ConfigError(out) from None


_CHANNEL_TAGS = frozenset({"email", "slack", "pagerduty", "webhook", "log"})
