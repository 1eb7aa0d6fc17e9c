"""Contract-suite plumbing: run capability-specific tests only where they apply.

A test marked ``@pytest.mark.requires("shared")`` is collected only for the adapter cases
whose ``capabilities`` include every named capability; for the others it is deselected
(not skipped: it does not apply to them, so CI never reports a skip for it).
"""

from __future__ import annotations

import pytest


def _case_capabilities(item: pytest.Item) -> frozenset[str] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for value in callspec.params.values():
        caps = getattr(value, "capabilities", None)
        if isinstance(caps, frozenset):
            return caps
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("requires")
        caps = _case_capabilities(item)
        if marker is not None and caps is not None and not set(marker.args) <= caps:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
