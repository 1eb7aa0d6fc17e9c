"""Named fault points for the fault-injection suite (test-only; free when unset).

``SHARDFLOW_FAULT=point:nth[:action]`` makes the ``nth`` time (1-based, counted per
process) that ``point`` is reached fail with ``action``: ``exit`` (default: the process
dies at once with ``os._exit(137)``, as kill -9 would leave it), ``raise`` (an
:class:`InjectedFault` exception), ``term`` (SIGTERM to itself), ``stop`` (SIGSTOP to
itself) or ``hang`` (block until killed). Several specs may be given separated by commas.

Points: ``after_lease``, ``mid_batch``, ``after_result_write``, ``after_marker``,
``mid_split``, ``mid_aggregation``, ``mid_upload``.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = frozenset(
    {
        "after_lease",
        "mid_batch",
        "after_result_write",
        "after_marker",
        "mid_split",
        "mid_aggregation",
        "mid_upload",
    }
)


class InjectedFault(RuntimeError):
    pass


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    plan: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rest = part.partition(":")
        nth, _, action = rest.partition(":")
        if name not in POINTS:
            raise ValueError(f"SHARDFLOW_FAULT: unknown fault point {name!r}")
        plan[name] = (int(nth or "1"), action or "exit")
    return plan


_PLAN = _parse(os.environ.get("SHARDFLOW_FAULT", ""))
_COUNTS: dict[str, int] = {}
_LOCK = threading.Lock()
ENABLED = bool(_PLAN)


def fault_point(name: str) -> None:
    """Trigger the configured fault when ``name`` is reached for the nth time."""
    if not ENABLED:
        return
    spec = _PLAN.get(name)
    if spec is None:
        return
    with _LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + 1
        hit = _COUNTS[name] == spec[0]
    if not hit:
        return
    action = spec[1]
    if action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    if action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    if action == "hang":
        threading.Event().wait()
    os._exit(137)
