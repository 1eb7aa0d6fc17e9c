"""How a handler's exception is classed (retried, failed, or treated as infrastructure):
the user's ``error_classes`` rules first, then the default mapping."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from shardflow.errors import (
    ClassRule,
    InfrastructureError,
    PermanentError,
    TransientError,
    classify,
    http_status_of,
)
from shardflow.models import ErrorClass


class ApiError(Exception):
    def __init__(self, message: str = "", *, status: Any = None, response: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.response = response


class RateLimited(ApiError):
    pass


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TransientError("later"), ErrorClass.TRANSIENT),
        (PermanentError("never"), ErrorClass.PERMANENT),
        (InfrastructureError("disk"), ErrorClass.INFRASTRUCTURE),
        (MemoryError(), ErrorClass.INFRASTRUCTURE),
        (OSError(errno.ENOSPC, "No space left on device"), ErrorClass.INFRASTRUCTURE),
        (OSError(errno.EROFS, "Read-only file system"), ErrorClass.INFRASTRUCTURE),
        (OSError(errno.ENOENT, "No such file"), ErrorClass.UNKNOWN),
        (TimeoutError(), ErrorClass.TRANSIENT),
        (ConnectionResetError(), ErrorClass.TRANSIENT),
        (ApiError(status=503), ErrorClass.TRANSIENT),
        (ApiError(status=429), ErrorClass.TRANSIENT),
        (ApiError(status=404), ErrorClass.PERMANENT),
        (ApiError(response=_Response(502)), ErrorClass.TRANSIENT),
        (ApiError(response=_Response(400)), ErrorClass.PERMANENT),
        (ApiError(status=301), ErrorClass.UNKNOWN),
        (ValueError("bad"), ErrorClass.PERMANENT),
        (KeyError("id"), ErrorClass.PERMANENT),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"), ErrorClass.PERMANENT),
        (RuntimeError("?"), ErrorClass.UNKNOWN),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_default_mapping(exc: BaseException, expected: ErrorClass) -> None:
    assert classify(exc) is expected


def test_http_status_is_read_from_the_exception_or_its_response() -> None:
    assert http_status_of(ApiError(status=418)) == 418
    assert http_status_of(ApiError(response=_Response(500))) == 500
    # values that are not HTTP statuses on the exception itself are ignored
    assert http_status_of(ApiError(status=0)) is None
    assert http_status_of(ApiError(status="503")) is None
    assert http_status_of(ValueError()) is None


def test_a_rule_by_exception_name_wins_over_the_default() -> None:
    rules = [ClassRule(ErrorClass.TRANSIENT, exceptions=("ValueError",))]
    assert classify(ValueError("flaky parse"), rules) is ErrorClass.TRANSIENT
    assert classify(KeyError("k"), rules) is ErrorClass.PERMANENT


def test_a_rule_names_an_exception_by_its_qualified_name_and_matches_subclasses() -> None:
    qualified = f"{ApiError.__module__}.{ApiError.__qualname__}"
    rules = [ClassRule(ErrorClass.INFRASTRUCTURE, exceptions=(qualified,))]
    assert classify(RateLimited("x"), rules) is ErrorClass.INFRASTRUCTURE
    assert classify(RuntimeError("x"), rules) is ErrorClass.UNKNOWN


def test_a_rule_with_every_condition_must_match_them_all() -> None:
    rule = ClassRule(
        ErrorClass.TRANSIENT, exceptions=("ApiError",), message=r"quota \d+", http_status=(403,)
    )
    assert rule.matches(ApiError("quota 5 exceeded", status=403))
    assert not rule.matches(ApiError("quota 5 exceeded", status=401))  # status differs
    assert not rule.matches(ApiError("forbidden", status=403))  # message differs
    assert not rule.matches(ValueError("quota 5 exceeded"))  # type differs
    assert classify(ApiError("quota 5 exceeded", status=403), [rule]) is ErrorClass.TRANSIENT
    assert classify(ApiError("forbidden", status=403), [rule]) is ErrorClass.PERMANENT


def test_the_first_matching_rule_decides() -> None:
    rules = [
        ClassRule(ErrorClass.PERMANENT, message="^fatal"),
        ClassRule(ErrorClass.TRANSIENT, message="timeout"),
    ]
    assert classify(RuntimeError("fatal timeout"), rules) is ErrorClass.PERMANENT
    assert classify(RuntimeError("read timeout"), rules) is ErrorClass.TRANSIENT
    assert classify(RuntimeError("other"), rules) is ErrorClass.UNKNOWN
