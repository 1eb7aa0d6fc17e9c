"""The core-coverage floor applies to CI's whole-suite run, not to a developer's partial run.

``addopts`` turns pytest-cov on for every run, and pytest-cov fails a run whose total is
under ``[tool.coverage.report] fail_under`` (the floor for the core; the report's ``omit``
list leaves the AWS adapters, dashboard and alerts out of it). A partial run
(``pytest tests/unit/test_models.py``, ``-k``, ``-m``, ``--deselect``, ``--lf``) covers a
fraction of the core, so the floor is dropped for it and kept only when ``CI`` is set and
the whole suite (the ``testpaths``) runs, as ``.ci/run`` does. A ``--cov-fail-under`` given
on the command line always applies. See docs/architecture.md, "Coverage".
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence

import pytest

_SUBSET_OPTIONS = ("keyword", "markexpr", "deselect", "lf", "stepwise")
_DROPPED = pytest.StashKey[bool]()


def is_ci(environ: Mapping[str, str]) -> bool:
    """``CI`` as CI services set it; unset, empty, ``0`` or ``false`` is not CI."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def floor_applies(
    *, ci: bool, whole_suite: bool, subset_options: Sequence[object], explicit: bool
) -> bool:
    """Whether a run is held to the coverage floor."""
    if explicit:
        return True
    return ci and whole_suite and not any(subset_options)


def floor_given_explicitly(args: Sequence[str], environ: Mapping[str, str]) -> bool:
    """``--cov-fail-under`` on the command line or in ``PYTEST_ADDOPTS``."""
    given = [*args, *shlex.split(environ.get("PYTEST_ADDOPTS", ""))]
    return any(arg.startswith("--cov-fail-under") for arg in given)


def pytest_configure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin("_cov")  # pytest-cov, when --cov is on
    options = getattr(plugin, "options", None)
    if options is None:
        return
    applies = floor_applies(
        ci=is_ci(os.environ),
        whole_suite=config.args_source is pytest.Config.ArgsSource.TESTPATHS,
        subset_options=[config.getoption(name, None) for name in _SUBSET_OPTIONS],
        explicit=floor_given_explicitly(config.invocation_params.args, os.environ),
    )
    if not applies and getattr(options, "cov_fail_under", None):
        options.cov_fail_under = None
        config.stash[_DROPPED] = True


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if config.stash.get(_DROPPED, False):
        terminalreporter.write_line(
            "coverage floor not applied to this run: it holds for the whole suite under CI=true"
        )
