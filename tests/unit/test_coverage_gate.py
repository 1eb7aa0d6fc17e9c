"""The coverage floor holds CI's whole-suite run and lets a developer's partial run pass."""

from __future__ import annotations

import pytest

from tests.plugins.coverage_gate import floor_applies, floor_given_explicitly, is_ci


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("TRUE", True), ("", False), ("0", False), ("false", False)],
)
def test_ci_is_read_as_ci_services_set_it(value: str, expected: bool) -> None:
    assert is_ci({"CI": value}) is expected
    assert is_ci({}) is False


def test_the_whole_suite_under_ci_is_held_to_the_floor() -> None:
    assert floor_applies(ci=True, whole_suite=True, subset_options=["", "", []], explicit=False)


@pytest.mark.parametrize(
    ("ci", "whole_suite", "subset_options"),
    [
        (False, True, []),  # a developer's whole-suite run
        (True, False, []),  # pytest tests/unit/test_models.py
        (True, True, ["test_models", ""]),  # -k test_models
        (True, True, ["", "slurm"]),  # -m slurm
        (True, True, [["tests/unit/test_docs.py::test_x"]]),  # --deselect
    ],
)
def test_a_partial_or_local_run_is_not(
    ci: bool, whole_suite: bool, subset_options: list[object]
) -> None:
    assert not floor_applies(
        ci=ci, whole_suite=whole_suite, subset_options=subset_options, explicit=False
    )


def test_a_floor_given_on_the_command_line_always_applies() -> None:
    assert floor_given_explicitly(["tests/unit", "--cov-fail-under=95"], {})
    assert floor_given_explicitly([], {"PYTEST_ADDOPTS": "-q --cov-fail-under 80"})
    assert not floor_given_explicitly(["-q", "tests/unit"], {"PYTEST_ADDOPTS": "-x"})
    assert floor_applies(ci=False, whole_suite=False, subset_options=["k"], explicit=True)
