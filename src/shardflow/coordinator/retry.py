"""Retry planning: exponential backoff with full jitter, and the job's failure threshold."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from fractions import Fraction

from shardflow.models import ErrorClass

RETRYABLE = frozenset({ErrorClass.TRANSIENT, ErrorClass.INFRASTRUCTURE, ErrorClass.UNKNOWN})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    base: float = 2.0
    cap: float = 300.0
    item_attempts: int = 3

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before attempt ``attempt + 1``: uniform in [0, min(cap, base·2^(attempt-1))]."""
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(0, ceiling)

    def should_retry(self, error_class: ErrorClass, attempt: int) -> bool:
        """Retry a failed attempt number ``attempt`` (1-based) of this class?"""
        return error_class in RETRYABLE and attempt < self.max_attempts

    def should_retry_item(self, error_class: ErrorClass, tries: int) -> bool:
        return error_class is ErrorClass.TRANSIENT and tries < self.item_attempts


DEFAULT_TOLERATED_PERCENT = 1.0
"""The tolerated share of failed items when a job sets neither a percent nor a count."""


@dataclass(frozen=True, slots=True)
class FailureThreshold:
    """How many failed items a job tolerates: a percent of its items, a count, or both
    (then exceeding either fails it, as Step Functions' tolerated failures do); neither
    means :data:`DEFAULT_TOLERATED_PERCENT`."""

    percent: float | None = DEFAULT_TOLERATED_PERCENT
    count: int | None = None

    def __post_init__(self) -> None:
        if self.percent is None and self.count is None:
            object.__setattr__(self, "percent", DEFAULT_TOLERATED_PERCENT)

    @classmethod
    def of(cls, percent: float | None, count: int | None) -> FailureThreshold:
        """The threshold a config gives (``retry.tolerated_failure_percent``, ``_count``)."""
        return cls(percent=percent, count=count)

    def exceeded(self, failed: int, total: int) -> bool:
        """True when failures are above what the job tolerates (exactly: 69 of 3,000 at
        2.3% is at the limit, not above it)."""
        if failed <= 0:
            return False
        if self.count is not None and failed > self.count:
            return True
        return self.percent is not None and failed * 100 > Fraction(str(self.percent)) * total

    def used(self, failed: int, total: int) -> float:
        """The share of the tolerance ``failed`` items use (above 1: exceeded), for alerts."""
        if failed <= 0:
            return 0.0
        shares = []
        if self.count is not None:
            shares.append(failed / self.count if self.count else math.inf)
        if self.percent is not None:
            limit = self.percent * max(total, 0) / 100.0
            shares.append(failed / limit if limit else math.inf)
        return max(shares)

    def describe(self) -> str:
        """``1%``, ``100 items`` or ``1% or 100 items``."""
        parts = [f"{self.percent:g}%"] if self.percent is not None else []
        if self.count is not None:
            parts.append(f"{self.count:,} item{'s' if self.count != 1 else ''}")
        return " or ".join(parts)
