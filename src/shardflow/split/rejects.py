"""Reject entries: malformed input lines and repeated keys, with their line numbers.

Entries are ``{"source", "line", "reason", "text"}`` JSON lines, one rejects part per input
(``layout.rejects("s0000")``), sorted by line. They are spooled to a local temp file while
the split runs (memory stays flat however many lines are bad) and put in the store at the
end; a re-run writes the same bytes again.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from shardflow.layout import Layout
from shardflow.objectstore.base import ObjectStore
from shardflow.split.records import excerpt


def part_name(source_index: int) -> str:
    return f"s{source_index:04d}"


class RejectWriter:
    """Collects reject entries per input and writes one rejects part per input that has any.

    With ``store=None`` (a dry run) entries are only counted.
    """

    def __init__(self, store: ObjectStore | None, layout: Layout | None, spool_dir: Path) -> None:
        self._store = store
        self._layout = layout
        self._dir = spool_dir
        self._files: dict[int, IO[bytes]] = {}
        self._late: dict[int, list[dict[str, Any]]] = {}
        self.count = 0

    def add(self, source_index: int, source: str, line: int, reason: str, raw: bytes | str) -> None:
        """Record a rejected line; calls for one input must come in line order."""
        self.count += 1
        if self._store is None:
            return
        f = self._files.get(source_index)
        if f is None:
            f = (self._dir / f"{part_name(source_index)}.jsonl").open("wb")
            self._files[source_index] = f
        f.write(_entry(source, line, reason, raw))

    def add_late(
        self, source_index: int, source: str, line: int, reason: str, raw: bytes | str
    ) -> None:
        """Record a reject found after the input was scanned (a repeated key), in line order."""
        self.count += 1
        if self._store is None:
            return
        entry = {"source": source, "line": line, "reason": reason, "text": excerpt(raw)}
        self._late.setdefault(source_index, []).append(entry)

    def flush(self) -> tuple[str, ...]:
        """Put every rejects part in the store; return their keys in input order."""
        if self._store is None or self._layout is None:
            return ()
        self.close()
        keys: list[str] = []
        for index in sorted(set(self._files) | set(self._late)):
            path = self._dir / f"{part_name(index)}.jsonl"
            late = self._late.get(index)
            if late:
                merged = self._dir / f"{part_name(index)}.merged.jsonl"
                with merged.open("wb") as out:
                    out.writelines(_merge(path if index in self._files else None, late))
                path = merged
            key = self._layout.rejects(part_name(index))
            self._store.put_file(key, path)
            keys.append(key)
        return tuple(keys)

    def close(self) -> None:
        """Close the spool files (also after a failure; idempotent)."""
        for f in self._files.values():
            f.close()


def _entry(source: str, line: int, reason: str, raw: bytes | str) -> bytes:
    entry = {"source": source, "line": line, "reason": reason, "text": excerpt(raw)}
    return orjson.dumps(entry) + b"\n"


def _merge(spool: Path | None, late: list[dict[str, Any]]) -> Iterator[bytes]:
    def spooled() -> Iterator[tuple[int, int, bytes]]:
        if spool is None:
            return
        with spool.open("rb") as f:
            for raw in f:
                yield orjson.loads(raw)["line"], 0, raw

    def later() -> Iterator[tuple[int, int, bytes]]:
        for entry in late:
            yield entry["line"], 1, orjson.dumps(entry) + b"\n"

    for _line, _order, raw in heapq.merge(spooled(), later()):
        yield raw
