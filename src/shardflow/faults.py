"""Named fault points for the fault-injection suite (test-only; free when unset).

``SHARDFLOW_FAULT=point:nth[:action]`` makes the ``nth`` time (1-based, counted per
process) that ``point`` is reached fail with ``action``: ``exit`` (default: the process
dies at once with ``os._exit(137)``, as kill -9 would leave it), ``raise`` (an
:class:`InjectedFault` exception), ``term`` (SIGTERM to itself), ``stop`` (SIGSTOP to
itself) or ``hang`` (block until killed), ``enospc`` (an ``OSError(ENOSPC)``, as a full disk
raises) or ``corrupt`` (the caller's ``corrupt`` callback damages the object it just
wrote). Several specs may be given separated by commas. With
``SHARDFLOW_FAULT_ONCE=/some/dir`` a fault fires once across all processes (the first to
create ``/some/dir/<point>`` wins), so a re-run attempt is not hit again.

Points: ``after_lease``, ``mid_batch``, ``after_result_write``, ``after_marker``,
``before_commit`` (a commit group's objects are flushed, its task rows not yet written),
``mid_split``, ``mid_dispatch`` (some task manifests are published, the split goes on),
``mid_aggregation``, ``mid_upload``, ``checkpoint`` (a chunk is being saved to scratch).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Callable

POINTS = frozenset(
    {
        "after_lease",
        "mid_batch",
        "after_result_write",
        "after_marker",
        "before_commit",
        "mid_dispatch",
        "mid_split",
        "mid_aggregation",
        "mid_upload",
        "checkpoint",
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


def _claim_once(name: str) -> bool:
    folder = os.environ.get("SHARDFLOW_FAULT_ONCE")
    if not folder:
        return True
    try:
        fd = os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def fault_point(name: str, corrupt: Callable[[], None] | None = None) -> None:
    """Trigger the configured fault when ``name`` is reached for the nth time."""
    if not ENABLED:
        return
    spec = _PLAN.get(name)
    if spec is None:
        return
    with _LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + 1
        hit = _COUNTS[name] == spec[0]
    if not hit or not _claim_once(name):
        return
    action = spec[1]
    if action == "corrupt":
        if corrupt is not None:
            corrupt()
        return
    if action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    if action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    if action == "hang":
        threading.Event().wait()
    os._exit(137)
