"""Token-bucket math: pure functions of a :class:`BucketState` and a time. No I/O.

The model
---------
A bucket refills at ``rate`` tokens per second up to ``burst``. Workers do not take
tokens one by one: they take *blocks* and spend them locally. Every block lives within
one *lease period*: the clock is cut into fixed slices ``[k·P, (k+1)·P)`` (``P`` is
:data:`LEASE_PERIOD` unless a caller says otherwise), and a block granted in period ``k``
may be spent only until ``(k+1)·P − margin`` (:func:`margin_for`). ``leased`` counts
the tokens granted in blocks during the period of ``last_refill`` and not yet given
back. The first write in a later period finds every one of those blocks expired, so
``leased`` drops to zero: the unused tokens of a killed worker are reclaimed at the end
of the period it took them in, without any per-owner record in the row.

A block may be *reserved ahead*: when the bucket holds fewer tokens than a worker wants,
it still gets its block, with a start time at which the refill will have paid for it,
and ``tokens`` goes negative (a queue of promised tokens). Workers then sleep until
their start instead of polling the store: one read and one write per block.

The guarantee
-------------
While blocks of the period may be spent, refill is capped at ``burst − leased`` and a
grant never takes more than that room, so ``tokens + leased ≤ burst`` and no block is
promised tokens the refill cannot pay; once none may be spent (the last half margin of
the period) only the bucket's own tokens count and it refills up to ``burst``. Tokens in
the bucket plus tokens spendable in live blocks thus never exceed ``burst``, reserved
blocks cover any debt, and each grant, give-back or expiry moves or destroys tokens but
never creates them. Hence **the tokens spent in any interval of length w are at most
burst + rate·w**, provided that (1) every writer and control call uses the same period,
and (2) the clocks of the hosts differ by less than half the margin (a holder stops
spending a margin before its period ends by its own clock). Losing tokens is always
safe; these functions never hand out a token twice.

After :func:`set_limit` lowers the rate, blocks granted under the old rate stay
spendable until their period ends: a change takes effect within one lease period.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from shardflow.ratelimit.base import BucketState

LEASE_PERIOD = 5.0
"""Seconds in a lease period. Every client and control call of one bucket must agree."""

_EPS = 1e-9  # float slack when comparing token counts (0.1 + 0.2 tokens is 0.3 tokens)


def margin_for(period: float) -> float:
    """How long before its period ends a holder stops spending a block. Half of it is
    the clock-skew budget between hosts; the other half is when the bucket, sure that no
    block of the period can be spent any more, refills up to the whole burst."""
    return min(0.25, period / 10.0)


def period_index(t: float, period: float) -> int:
    return math.floor(t / period)


def period_end(t: float, period: float) -> float:
    """The end of the lease period that contains ``t``."""
    return (period_index(t, period) + 1) * period


def check_limit(rate: float, burst: float) -> None:
    """Raise ValueError unless ``rate > 0`` and ``burst ≥ 1``, both finite."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a rate limit needs a rate above zero, got {rate!r}")
    if not (math.isfinite(burst) and burst >= 1):
        raise ValueError(f"a rate limit needs a burst of at least 1, got {burst!r}")


def new_bucket(
    key: str, rate: float, burst: float, now: float, *, paused: bool = False
) -> BucketState:
    """A full bucket (``tokens == burst``) to create with version 0. ValueError for a
    rate or burst out of range (:func:`check_limit`)."""
    check_limit(rate, burst)
    return BucketState(
        key=key, rate=rate, burst=burst, tokens=burst, last_refill=now, paused=paused
    )


def settle(state: BucketState, now: float, period: float) -> BucketState:
    """The bucket brought forward to ``max(now, last_refill)``.

    Time never runs backwards: a writer whose clock is behind the last writer's acts at
    the stored time. Tokens refill at ``rate``, capped at ``burst − leased`` while blocks
    of the period may still be spent, and at ``burst`` once none can (the last half
    margin of the period, and any later period); leases of an earlier period are dropped.
    A paused bucket refills too; pausing only stops grants.
    """
    t = max(now, state.last_refill)
    last, tokens = state.last_refill, state.tokens
    end = period_end(last, period)
    free_at = end - margin_for(period) / 2
    if last < free_at:
        upto = min(t, free_at)
        cap = max(0.0, state.burst - state.leased)
        tokens = min(cap, tokens + state.rate * (upto - last))
        last = upto
    same = period_index(t, period) == period_index(state.last_refill, period)
    if not same:
        # every block of the period has expired; a debt left (only a rate lowered while
        # blocks were reserved leaves one) is forgiven: the new rate holds from here on
        tokens = max(0.0, min(state.burst, tokens + state.rate * max(0.0, end - last)))
        last = max(last, end)
    if t > last:
        tokens = min(state.burst, tokens + state.rate * (t - last))
    leased = state.leased if same else 0.0
    return dataclasses.replace(state, tokens=tokens, leased=leased, last_refill=t)


def _cap(state: BucketState, period: float) -> float:
    """How many tokens a settled bucket may hold now (see :func:`settle`)."""
    free_at = period_end(state.last_refill, period) - margin_for(period) / 2
    if state.last_refill >= free_at:
        return state.burst
    return max(0.0, state.burst - state.leased)


def give_back(
    state: BucketState, *, size: float, unused: float, granted_in: int, period: float
) -> BucketState:
    """Return a block of ``size`` tokens granted in period ``granted_in``, ``unused`` of
    them unspent, to a settled bucket. A block of an earlier period has expired and
    changes nothing. The holder must never spend from the block again."""
    if granted_in != period_index(state.last_refill, period):
        return state
    leased = max(0.0, state.leased - size)
    unused = min(max(unused, 0.0), size)
    back = dataclasses.replace(state, leased=leased)
    return dataclasses.replace(back, tokens=min(_cap(back, period), state.tokens + unused))


@dataclass(frozen=True, slots=True)
class Grant:
    """What :func:`grant` decided: the bucket to write, and a block or a wait.

    With ``tokens > 0`` the block may be spent from ``starts_in`` until ``usable_for``
    seconds after the bucket's ``last_refill``. With ``tokens == 0`` nothing was granted,
    ``wait`` is how many seconds to wait before asking again (``math.inf`` while the
    bucket is paused), and ``reason`` says why: ``paused``, ``period`` (wait for the next
    lease period), ``room`` (blocks out use the whole burst) or ``patience`` (the tokens
    come later than the caller's ``max_delay``); a block that was granted says
    ``granted``.
    """

    state: BucketState
    tokens: float
    period: int
    starts_in: float
    usable_for: float
    wait: float
    reason: str = "granted"


def grant(
    state: BucketState,
    *,
    need: float,
    want: float,
    period: float,
    max_delay: float = math.inf,
) -> Grant:
    """Take a block of ``want`` tokens (at least ``need``) from a settled bucket.

    The block is as large as ``want``, the free room (``burst − leased``) and what the
    refill can pay for by the latest useful start allow: ``margin`` before the holder's
    deadline, and no later than ``max_delay`` from now. Nothing is granted while the
    bucket is paused, in the last ``margin`` seconds of a period, or when that size is
    below ``need``. Raises ValueError if ``need`` exceeds the burst (never grantable).
    """
    if need > state.burst + _EPS:
        raise ValueError(
            f"{need:g} tokens at once exceed the burst of {state.key} ({state.burst:g})"
        )
    t = state.last_refill
    index = period_index(t, period)
    end = (index + 1) * period
    margin = margin_for(period)
    usable = end - margin - t
    if state.paused:
        return Grant(state, 0.0, index, 0.0, 0.0, math.inf, "paused")
    if usable <= 0:
        return Grant(state, 0.0, index, 0.0, 0.0, end - t, "period")
    room = state.burst - state.leased
    latest = min(usable - margin, max_delay)
    payable = max(state.tokens, state.tokens + state.rate * latest)
    amount = min(max(want, need), room, payable)
    if amount + _EPS < need:
        if room + _EPS < need:
            # blocks out use the whole burst: room frees as they come back, in chunks
            wait = max(want, need, state.leased / 4) / state.rate
            return Grant(state, 0.0, index, 0.0, 0.0, wait, "room")
        if max_delay < usable - margin:
            wait = (need - state.tokens) / state.rate
            return Grant(state, 0.0, index, 0.0, 0.0, wait, "patience")
        return Grant(state, 0.0, index, 0.0, 0.0, end - t, "period")
    amount = max(amount, need)
    starts_in = max(0.0, (amount - state.tokens) / state.rate)
    new = dataclasses.replace(state, tokens=state.tokens - amount, leased=state.leased + amount)
    return Grant(new, amount, index, starts_in, usable, 0.0)


def set_limit(
    state: BucketState, *, rate: float, burst: float, now: float, period: float
) -> BucketState:
    """Change rate and burst: settle at the old rate up to ``now``, then clamp the tokens
    to the new ``burst − leased``. Raises ValueError for a rate or burst out of range."""
    check_limit(rate, burst)
    settled = dataclasses.replace(settle(state, now, period), rate=rate, burst=burst)
    return dataclasses.replace(settled, tokens=min(settled.tokens, _cap(settled, period)))
