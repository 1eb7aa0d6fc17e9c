"""Fixtures of the security tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Commands run in-process call configure_logging, which replaces the root logger's
    handlers (one writing to the test runner's captured stream): put them back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    botocore = logging.getLogger("botocore").level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("botocore").setLevel(botocore)
