"""Retry planning: exponential backoff with full jitter, and the job's failure threshold."""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class FailureThreshold:
    percent: float = 1.0
    count: int | None = None

    def exceeded(self, failed: int, total: int) -> bool:
        """True when failures are above what the job tolerates (count or percent)."""
        if failed == 0:
            return False
        if self.count is not None and failed > self.count:
            return True
        if total <= 0:
            return True
        return failed * 100.0 > self.percent * total
