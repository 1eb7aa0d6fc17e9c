"""The worker's batch reader (the hot path): a batch's records, one at a time.

A byte-range batch is read from its input through the :class:`Source` in blocks of a few
MB (never the whole file); a written batch from the store. Lines are classified by the
same rules as the split (:mod:`.records`), so a record has the same ordinal here as
there: lines the split rejected are skipped silently, blank lines are skipped, and
without an id field bad JSON comes back as a record with ``error`` set.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from itertools import chain
from typing import IO

import orjson

from shardflow.errors import InputError
from shardflow.models import Batch, item_key
from shardflow.objectstore.base import ObjectStore
from shardflow.split.formats import iter_line_blocks
from shardflow.split.records import (
    CsvDialect,
    CsvGrouper,
    CsvUnit,
    csv_key,
    excerpt,
    jsonl_line,
    key_of,
)
from shardflow.split.sources import Source, local_input_path, open_source
from shardflow.split.spec import Record, SplitSpec

__all__ = ["Record", "batch_item_keys", "iter_batch"]


class _RangeStream(io.BufferedIOBase):
    """Bytes ``[start, end)`` of a Source, read in ranged blocks."""

    def __init__(self, source: Source, start: int, end: int) -> None:
        super().__init__()
        self._source, self._pos, self._end = source, start, end

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        stop = self._end if size is None or size < 0 else min(self._end, self._pos + size)
        data = self._source.read_range(self._pos, stop) if stop > self._pos else b""
        self._pos += len(data)
        return data


class _LocalRange(io.BufferedIOBase):
    """Bytes ``[start, end)`` of a local file: one open, then sequential reads."""

    def __init__(self, f: IO[bytes], start: int, end: int) -> None:
        super().__init__()
        f.seek(start)
        self._f, self._left = f, end - start

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(n) if n > 0 else b""
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()
        super().close()


def _open_batch(batch: Batch, spec: SplitSpec, store: ObjectStore) -> io.BufferedIOBase:
    skip = 0
    if batch.written and batch.format == "csv" and batch.header is not None:
        skip = len(batch.header.encode(spec.encoding)) + 1  # the header line written first
    if batch.written:
        path = store.local_path(batch.source)
        if path is not None:
            return _LocalRange(path.open("rb"), skip, path.stat().st_size)
        return io.BytesIO(store.get_bytes(batch.source)[skip:])
    local = local_input_path(batch.source)
    if local is not None:
        # the split stat-ed the file and fixed the range: only an open is left to do
        try:
            f = local.open("rb")
        except OSError as exc:
            raise InputError(f"cannot read input {local}: {exc.strerror}") from exc
        end = os.fstat(f.fileno()).st_size if batch.end is None else batch.end
        return _LocalRange(f, batch.start, end)
    source = open_source(batch.source)
    end = source.size if batch.end is None else batch.end
    return _RangeStream(source, batch.start, end)


def iter_batch(
    batch: Batch, *, spec: SplitSpec, store: ObjectStore, start_after: int = -1
) -> Iterator[Record]:
    """Every record of ``batch`` in order, as :class:`Record` (ordinal, line, value, error, raw).

    Ordinals are batch-relative and the same as the split's; ordinals in ``batch.skip``
    (repeated keys) and up to ``start_after`` (already done) are not yielded. Raises
    :class:`InputError` if the batch's data cannot be read.
    """
    # not a generator itself: the reader's own generator is handed out, one layer fewer
    # on every record
    if batch.format == "jsonl":
        return _iter_jsonl(batch, spec, store, start_after)
    if batch.format == "parquet":
        from shardflow.split.parquet import iter_parquet

        return iter_parquet(batch, spec, start_after)
    if batch.format == "csv":
        return _iter_csv_records(batch, spec, store, start_after)
    raise InputError(f"batch {batch.batch_id}: unknown format {batch.format!r}")


def _iter_csv_records(
    batch: Batch, spec: SplitSpec, store: ObjectStore, start_after: int
) -> Iterator[Record]:
    skip = frozenset(batch.skip)
    for ordinal, line, fields, names, _unit in _iter_csv(batch, spec, store):
        if ordinal > start_after and ordinal not in skip:
            yield Record(ordinal, line, dict(zip(names, fields, strict=True)), None, None)


def _iter_jsonl(
    batch: Batch, spec: SplitSpec, store: ObjectStore, start_after: int
) -> Iterator[Record]:
    loads, decode_error, new = orjson.loads, orjson.JSONDecodeError, tuple.__new__
    max_bytes, id_field = spec.max_record_bytes, spec.id_field
    skip = frozenset(batch.skip)
    simple = id_field is None and not skip
    ordinal, line = 0, batch.first_line
    with _open_batch(batch, spec, store) as stream:
        for block in iter_line_blocks(stream, max_bytes):
            if block.overlong >= 0:
                line += 1
                continue
            lines = block.lines
            if simple and ordinal > start_after and max(map(len, lines)) <= max_bytes:
                # the common case, kept tight: no keys, nothing to skip, no long lines
                for number, raw in enumerate(lines, line):
                    try:
                        value = loads(raw)
                    except decode_error:
                        value = None
                    if type(value) is dict:
                        yield new(Record, (ordinal, number, value, None, None))
                        ordinal += 1
                    else:
                        reason = _reader_error(raw, spec)
                        if reason is not None:
                            yield new(Record, (ordinal, number, None, reason, excerpt(raw)))
                            ordinal += 1
                line += len(lines)
                continue
            for raw in lines:
                try:
                    value = loads(raw)
                except decode_error:
                    value = None
                if (
                    type(value) is dict
                    and len(raw) <= max_bytes
                    and (id_field is None or key_of(value, id_field)[0] is not None)
                ):
                    if ordinal > start_after and ordinal not in skip:
                        yield new(Record, (ordinal, line, value, None, None))
                    ordinal += 1
                elif id_field is None:
                    reason = _reader_error(raw, spec)
                    if reason is not None:
                        if ordinal > start_after and ordinal not in skip:
                            yield new(Record, (ordinal, line, None, reason, excerpt(raw)))
                        ordinal += 1
                line += 1


def _reader_error(raw: bytes, spec: SplitSpec) -> str | None:
    """Why a line that is not a JSON object is a record in error, or None if it is no record.

    Without an id field, bad JSON is the reader's to report; the split already rejected
    lines that are too long or not UTF-8, and blank lines are nothing.
    """
    if jsonl_line(raw, spec, parse=False)[2] is not None:
        return None
    return jsonl_line(raw, spec, parse=True)[2]


def _iter_csv(
    batch: Batch, spec: SplitSpec, store: ObjectStore
) -> Iterator[tuple[int, int, list[str], list[str], CsvUnit]]:
    """``(ordinal, line, fields, column names, unit)`` for every CSV record of the batch."""
    dialect = CsvDialect(spec)
    names, _ = dialect.parse_text(batch.header or "")
    if names is None:
        raise InputError(f"batch {batch.batch_id}: no CSV header")
    id_index = names.index(spec.id_field) if spec.id_field in names else -1
    grouper = CsvGrouper(spec)
    ordinal, line = 0, batch.first_line
    with _open_batch(batch, spec, store) as stream:
        for block in chain(iter_line_blocks(stream, spec.max_record_bytes), [None]):
            units = grouper.finish() if block is None else grouper.feed(block)
            for unit, (fields, _reason) in zip(units, dialect.parse_units(units), strict=True):
                if (
                    fields is not None
                    and len(fields) == len(names)
                    and (id_index < 0 or csv_key(fields, id_index, "")[0] is not None)
                ):
                    yield ordinal, line, fields, names, unit
                    ordinal += 1
                line += unit.nlines


def iter_keys(
    batch: Batch, spec: SplitSpec, store: ObjectStore
) -> Iterator[tuple[int, int, str, str]]:
    """``(ordinal, line, key, text)`` for every record of a batch, ``batch.skip`` included.

    Needs ``spec.id_field``; used to confirm repeated keys after the split.
    """
    id_field = spec.id_field
    if id_field is None:
        raise ValueError("iter_keys needs an id field")
    if batch.format == "parquet":
        from shardflow.split.parquet import iter_parquet

        plain = dataclasses.replace(batch, skip=())
        for rec in iter_parquet(plain, spec, -1, columns=[id_field]):
            key = key_of(rec.value, id_field)[0] or ""
            yield rec.ordinal, rec.line, key, orjson.dumps(rec.value).decode()
    elif batch.format == "csv":
        for ordinal, line, fields, names, unit in _iter_csv(batch, spec, store):
            yield ordinal, line, fields[names.index(id_field)], excerpt(unit.raw)
    else:
        ordinal, line = 0, batch.first_line
        with _open_batch(batch, spec, store) as stream:
            for block in iter_line_blocks(stream, spec.max_record_bytes):
                for raw in block.lines if block.overlong < 0 else ():
                    _value, found, reason = jsonl_line(raw, spec, parse=True)
                    if reason is None and found is not None:
                        yield ordinal, line, found, excerpt(raw)
                        ordinal += 1
                    line += 1
                if block.overlong >= 0:
                    line += 1


def batch_item_keys(batch: Batch, spec: SplitSpec, store: ObjectStore) -> Iterator[tuple[int, str]]:
    """``(ordinal, item key)`` for every item of ``batch`` (``batch.skip`` excluded).

    The key is the id field's value, else ``batch_id:ordinal``; used to turn a failed
    task into one failure record per item.
    """
    if spec.id_field is None:
        for ordinal in range(batch.records):
            if ordinal not in batch.skip:
                yield ordinal, item_key(batch.batch_id, ordinal)
        return
    skip = frozenset(batch.skip)
    for ordinal, _line, key, _text in iter_keys(batch, spec, store):
        if ordinal not in skip:
            yield ordinal, item_key(batch.batch_id, ordinal, key)
