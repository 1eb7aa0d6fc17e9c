"""The context a handler receives: who it is, a logger, metrics and rate-limit tokens."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class RateLimiter:
    """What ``ctx.acquire`` talks to; the no-op default grants at once."""

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        return None

    def report_throttled(self, name: str) -> None:
        return None

    def close(self) -> None:
        return None

    def metrics(self) -> dict[str, float]:
        """Counters since the last call: ``tokens``, ``ratelimit_wait_ms``…"""
        return {}


@dataclass
class TaskContext:
    job_id: str
    task_id: str
    batch_id: str
    attempt: int
    slot: str
    logger: logging.Logger
    limiter: RateLimiter = field(default_factory=RateLimiter)
    metrics: dict[str, float] = field(default_factory=dict)
    should_stop: Callable[[], bool] = field(default=lambda: False)
    # calls made through @ctx.limited, and the time in them: ``api_calls``, ``api_ms``
    api: dict[str, float] = field(default_factory=dict)

    def acquire(self, name: str, tokens: float = 1.0, timeout: float | None = None) -> None:
        """Block until ``tokens`` of the named rate limit are granted (or raise on timeout)."""
        self.limiter.acquire(name, tokens, timeout)

    def report_throttled(self, name: str) -> None:
        """Say the API behind ``name`` answered 429: back off and shrink our token block."""
        self.limiter.report_throttled(name)

    def metric(self, name: str, value: float) -> None:
        """Add ``value`` to the handler-defined metric ``name`` for this attempt."""
        self.metrics[name] = self.metrics.get(name, 0.0) + float(value)

    def limited(
        self, name: str, tokens: float = 1.0
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form: ``@ctx.limited("geo_api")`` acquires before each call, and
        counts the call and its time in the attempt's ``api_calls`` and ``api_ms``."""

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def inner(*args: Any, **kwargs: Any) -> Any:
                self.acquire(name, tokens)
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    self.count_api(1, (time.perf_counter() - started) * 1000.0)

            return inner

        return wrap

    def count_api(self, calls: float, ms: float) -> None:
        """Add to the attempt's ``api_calls`` and ``api_ms``."""
        self.api["api_calls"] = self.api.get("api_calls", 0.0) + calls
        self.api["api_ms"] = self.api.get("api_ms", 0.0) + ms
