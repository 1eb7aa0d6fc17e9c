"""One watcher pass: observe the jobs and this machine, evaluate the rules, deliver.

Delivery keeps one promise per (alert, channel): a condition that appears is sent; while
it holds it is repeated at most once per ``suppress`` window (never, for one-shot
conditions such as a failed job); when it clears, every channel that was told about it
gets a resolve (PagerDuty with the same ``dedup_key``). A channel that fails is tried
again at the next pass and the failure is reported, never dropped.
"""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shardflow.alerts.channels import Channel, DeliveryError
from shardflow.alerts.config import AlertsConfig
from shardflow.alerts.rules import (
    Condition,
    HostFacts,
    JobFacts,
    Snapshot,
    evaluate_host,
    evaluate_job,
)
from shardflow.alerts.state import AlertState, OpenAlert, load_state, locked, save_state
from shardflow.alerts.text import RESOLVE, TRIGGER, Notice
from shardflow.models import ErrorClass, Job, TaskStatus
from shardflow.statestore.base import StateStore

log = logging.getLogger("shardflow.alerts")

HostProbe = Callable[[Path], "HostFacts | None"]


@dataclass
class PassReport:
    conditions: list[Condition] = field(default_factory=list)
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, key, channel)
    suppressed: int = 0
    resolved: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{len(self.conditions)} alert(s) open, {len(self.sent)} message(s) sent, "
            f"{self.suppressed} suppressed, {len(self.resolved)} resolved"
            + (f", {len(self.failures)} delivery failure(s)" if self.failures else "")
        )


def _meminfo(path: Path = Path("/proc/meminfo")) -> tuple[int | None, int | None]:
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return None, None
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * 1024
    return values.get("MemTotal"), values.get("MemAvailable")


def probe_host(workspace: Path) -> HostFacts | None:
    """Disk usage of the workspace's filesystem and memory from /proc/meminfo; None
    when the workspace is not on this machine."""
    if not workspace.exists():
        return None
    usage = shutil.disk_usage(workspace)
    total, available = _meminfo()
    return HostFacts(
        socket.gethostname(), str(workspace), usage.total, usage.free, total, available
    )


def _limits(state: StateStore, job: Job, now: float) -> list[dict[str, object]]:
    if not (job.config.get("config") or {}).get("rate_limits"):
        return []
    try:
        from shardflow.ratelimit.control import limit_usage
    except ImportError:  # the rate limiter is optional
        return []
    return [asdict(u) for u in limit_usage(state, job.job_id, now=now)]


def gather_job(state: StateStore, job: Job, now: float) -> JobFacts:
    """Counters, rate-limit usage and a bounded sample of infrastructure-failed tasks."""
    counters = state.read_counters(job.job_id)
    limits = _limits(state, job, now) if not job.status.is_final else []
    infra, sample = 0, None
    if not job.status.is_final:
        for status in (TaskStatus.RETRY_WAIT, TaskStatus.FAILED):
            for task in state.list_tasks(job.job_id, status, limit=1000):
                if task.error_class is ErrorClass.INFRASTRUCTURE:
                    infra += 1
                    sample = sample or task.error_message
    return JobFacts(job, counters, now, limits, infra, sample)


def evaluate(
    state: StateStore,
    cfg: AlertsConfig,
    st: AlertState,
    *,
    now: float,
    job_ids: Sequence[str] | None,
    workspace: Path | None,
    probe: HostProbe,
) -> tuple[list[Condition], set[str] | None]:
    """The conditions holding now, and the subjects this pass speaks for (None: all)."""
    if job_ids is None:
        jobs = state.list_jobs(cfg.jobs)
    else:
        jobs = [j for j in (state.get_job(i) for i in job_ids) if j is not None]
    conditions: list[Condition] = []
    for job in jobs:
        facts = gather_job(state, job, now)
        conditions += evaluate_job(facts, st.history.get(job.job_id, []), cfg.rules)
        if job.status.is_final:
            st.history.pop(job.job_id, None)
        else:
            st.record(job.job_id, Snapshot.of(now, facts.counters))
    watched = {j.job_id for j in jobs}
    if job_ids is None:
        for gone in set(st.history) - watched:
            del st.history[gone]
    scope: set[str] | None = None if job_ids is None else set(job_ids)
    host = probe(workspace) if workspace is not None else None
    if host is not None:
        conditions += evaluate_host(host, cfg.rules)
        if scope is not None:
            scope.add(f"host:{host.host}")
    return conditions, scope


def deliver(
    st: AlertState,
    conditions: Sequence[Condition],
    channels: Sequence[Channel],
    *,
    now: float,
    cfg: AlertsConfig,
    source: str,
    scope: set[str] | None = None,
) -> PassReport:
    """Send, repeat, suppress and resolve (see the module docstring); updates ``st``."""
    report = PassReport(conditions=list(conditions))
    holding = set()
    for cond in conditions:
        holding.add(cond.key)
        entry = st.open.get(cond.key)
        if entry is None:
            entry = st.open[cond.key] = OpenAlert(now, cond)
        entry.condition = cond
        since = cond.since if cond.since is not None else entry.first_seen
        notice = Notice(TRIGGER, cond, since, now, source, cfg.dashboard_url)
        for channel in channels:
            last = entry.sent.get(channel.name)
            if last is not None and (not cond.repeat or now - last < cfg.suppress):
                report.suppressed += 1
                continue
            if _send(channel, notice, report):
                entry.sent[channel.name] = now
    for key in sorted(set(st.open) - holding):
        entry = st.open[key]
        if scope is not None and entry.condition.subject not in scope:
            continue  # another watcher's business (this pass looked at other jobs)
        since = entry.condition.since or entry.first_seen
        notice = Notice(RESOLVE, entry.condition, since, now, source, cfg.dashboard_url)
        for channel in channels:
            if channel.name in entry.sent and _send(channel, notice, report):
                del entry.sent[channel.name]
        # channels removed from the config since the trigger cannot be told any more
        entry.sent = {k: v for k, v in entry.sent.items() if k in {c.name for c in channels}}
        if not entry.sent:
            del st.open[key]
            report.resolved.append(key)
    return report


def _send(channel: Channel, notice: Notice, report: PassReport) -> bool:
    try:
        channel.send(notice)
    except DeliveryError as exc:
        message = f"{channel.name}: {notice.kind} {notice.condition.key}: {exc}"
        log.error("alert delivery failed: %s", message)
        report.failures.append(message)
        return False
    except Exception as exc:  # one broken channel must not stop the others
        # the text of an unexpected error may repeat the channel's URL or key: its type only
        message = (
            f"{channel.name}: {notice.kind} {notice.condition.key}: "
            f"unexpected {type(exc).__name__} (details not shown: they may hold a secret)"
        )
        log.error("alert delivery failed: %s", message)
        report.failures.append(message)
        return False
    report.sent.append((notice.kind, notice.condition.key, channel.name))
    return True


def run_pass(
    state: StateStore,
    cfg: AlertsConfig,
    channels: Sequence[Channel],
    state_path: Path,
    *,
    now: float,
    job_ids: Sequence[str] | None = None,
    workspace: Path | None = None,
    probe: HostProbe = probe_host,
) -> PassReport:
    """One locked pass over the alert state at ``state_path``; returns what happened.
    Store errors propagate (the state file is then left as it was)."""
    source = cfg.source or socket.gethostname()
    with locked(state_path):
        st = load_state(state_path)
        conditions, scope = evaluate(
            state, cfg, st, now=now, job_ids=job_ids, workspace=workspace, probe=probe
        )
        report = deliver(st, conditions, channels, now=now, cfg=cfg, source=source, scope=scope)
        save_state(state_path, st)
    return report
