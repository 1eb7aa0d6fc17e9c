"""Batching strategies: by records (default), by bytes, or a user function.

:class:`BatchBuilder` walks the input in blocks of units (lines, CSV records or Parquet
rows), groups the records among them into batches and tells a :class:`BatchSink` where
each batch starts and ends. It does no I/O. Blocks whose units are all records take a
fast path that works on whole lists in C instead of one unit at a time.
"""

from __future__ import annotations

import importlib
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

from shardflow.errors import ConfigError
from shardflow.split.spec import SplitSpec

BatchFunction = Callable[[int, int, bytes], bool]


def load_batch_function(ref: str) -> BatchFunction:
    """Import ``"module:function"``; raise :class:`ConfigError` if it cannot be used."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"batching function {ref!r}: use 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"batching function {ref!r}: cannot import {module_name}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"batching function {ref!r}: {attr} is not a function in {module_name}")
    return fn  # type: ignore[no-any-return]


@dataclass(frozen=True)
class BatchPolicy:
    """When to cut: before the record that would make the batch too big.

    A batch always holds at least one record, so a record bigger than ``max_bytes`` is a
    batch by itself.
    """

    max_records: int | None = None
    max_bytes: int | None = None
    function: BatchFunction | None = None

    @classmethod
    def from_spec(cls, spec: SplitSpec) -> BatchPolicy:
        if spec.batch_function:
            return cls(function=load_batch_function(spec.batch_function))
        if spec.batch_bytes is not None:
            if spec.batch_bytes < 1:
                raise ConfigError("batching.bytes must be at least 1")
            return cls(max_bytes=spec.batch_bytes)
        records = spec.batch_records if spec.batch_records is not None else 10_000
        if records < 1:
            raise ConfigError("batching.records must be at least 1")
        return cls(max_records=records)

    def cut(self, records: int, nbytes: int, weight: int, text: bytes) -> bool:
        """Whether to start a new batch before a record of ``weight`` bytes."""
        if records == 0:
            return False
        if self.function is not None:
            return bool(self.function(records, nbytes, text))
        if self.max_bytes is not None:
            return nbytes + weight > self.max_bytes
        return self.max_records is not None and records >= self.max_records


class BatchSink(Protocol):
    def open(self, offset: int, line: int, ordinal: int) -> None:
        """A batch starts at the stream ``offset`` of a record on ``line``."""

    def take(self, first: int, end: int) -> None:
        """Units ``[first, end)`` of the current block belong to the open batch."""

    def close(self, end: int, records: int) -> None:
        """The open batch ends at stream offset ``end`` with ``records`` records."""


#: unit kinds: a record, a blank line (not a record), a rejected record
RECORD, BLANK, REJECT = 0, 1, 2


class BatchBuilder:
    """Groups records into batches as blocks of units arrive, in input order."""

    def __init__(self, policy: BatchPolicy, sink: BatchSink, *, ordinal: int = 0) -> None:
        self.policy = policy
        self.sink = sink
        self.offset = 0
        self.line = 1
        self.ordinal = ordinal
        self._open = False
        self._records = 0
        self._bytes = 0
        self._end = 0

    def feed(
        self,
        spans: Sequence[int],
        kinds: Sequence[int] | None = None,
        *,
        weights: Sequence[int] | None = None,
        nlines: Sequence[int] | None = None,
        texts: Sequence[bytes] | None = None,
    ) -> None:
        """Take one block: ``spans`` (stream bytes or rows per unit), ``kinds`` (None: all
        records), ``weights`` (bytes for the bytes policy; default ``spans``), ``nlines``
        (lines per unit; default 1) and ``texts`` (needed by a batching function)."""
        if not spans:
            return
        if kinds is None and self.policy.function is None:
            # every unit is a record: work on whole lists (C loops) instead of unit by unit
            lines = list(accumulate(nlines, initial=0)) if nlines is not None else None
            if self.policy.max_bytes is not None:
                self._feed_bytes_fast(spans, weights or spans, lines)
            else:
                self._feed_records_fast(spans, lines)
        else:
            self._feed_slow(spans, kinds, weights or spans, nlines, texts)

    def finish(self) -> None:
        """Close the last batch (call once, after the last block)."""
        if self._open:
            self._close()

    def _start(self, offset: int, line: int) -> None:
        self.sink.open(offset, line, self.ordinal)
        self._open, self._records, self._bytes = True, 0, 0

    def _close(self) -> None:
        self.sink.close(self._end, self._records)
        self._open = False

    def _feed_records_fast(self, spans: Sequence[int], lines: list[int] | None) -> None:
        limit = self.policy.max_records or 1
        n, i, off = len(spans), 0, self.offset
        while i < n:
            if not self._open:
                self._start(off, self.line + (lines[i] if lines is not None else i))
            first = i
            j = min(n, i + limit - self._records)
            off += sum(spans[i:j])
            self._records += j - i
            self.ordinal += j - i
            self._end = off
            if self._records >= limit:
                self.sink.take(first, j)
                self._close()
            elif j == n:
                self.sink.take(first, n)
            i = j
        self.offset, self.line = off, self.line + (lines[n] if lines is not None else n)

    def _feed_bytes_fast(
        self, spans: Sequence[int], weights: Sequence[int], lines: list[int] | None
    ) -> None:
        limit = self.policy.max_bytes or 1
        cum = list(accumulate(weights, initial=0))
        offs = cum if weights is spans else list(accumulate(spans, initial=0))
        n, i = len(spans), 0
        while i < n:
            first = i
            if not self._open:
                self._start(self.offset + offs[i], self.line + (lines[i] if lines else i))
                j = max(i + 1, bisect_right(cum, cum[i] + limit) - 1)
            else:
                j = bisect_right(cum, cum[i] + limit - self._bytes) - 1
                if j <= i:
                    self._close()
                    continue
            self._records += j - i
            self.ordinal += j - i
            self._bytes += cum[j] - cum[i]
            self._end = self.offset + offs[j]
            self.sink.take(first, j)
            if j < n:
                self._close()
            i = j
        self.offset = self.offset + offs[n]
        self.line += lines[n] if lines is not None else n

    def _feed_slow(
        self,
        spans: Sequence[int],
        kinds: Sequence[int] | None,
        weights: Sequence[int],
        nlines: Sequence[int] | None,
        texts: Sequence[bytes] | None,
    ) -> None:
        policy, sink = self.policy, self.sink
        off, line = self.offset, self.line
        first = 0  # first unit of this block not yet given to the open batch
        last = -1  # last record unit given to the open batch in this block
        for i, span in enumerate(spans):
            if kinds is None or kinds[i] == RECORD:
                weight = weights[i]
                if self._open and policy.cut(
                    self._records, self._bytes, weight, texts[i] if texts is not None else b""
                ):
                    if last >= first:
                        sink.take(first, last + 1)
                    self._close()
                if not self._open:
                    self._start(off, line)
                    first = i
                self._records += 1
                self._bytes += weight
                self.ordinal += 1
                self._end = off + span
                last = i
            off += span
            line += nlines[i] if nlines is not None else 1
        if self._open:
            # trailing non-records go with the open batch so written batches keep line numbers
            sink.take(first, len(spans))
        self.offset, self.line = off, line
