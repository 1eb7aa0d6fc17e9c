"""Splitting one JSONL or CSV input into batches.

A plain input becomes byte-range batches over the original file (nothing is copied). A
compressed input is decompressed once, as a stream, and each batch is written to the store
as a plain file, with rejected lines blanked so that line numbers still count right.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from shardflow.catalog import part_start
from shardflow.errors import InputError
from shardflow.faults import fault_point
from shardflow.layout import Layout
from shardflow.models import Batch
from shardflow.objectstore.base import ObjectStore
from shardflow.split.batching import BLANK, RECORD, REJECT, BatchBuilder, BatchPolicy
from shardflow.split.dedup import KeyIndex
from shardflow.split.formats import (
    HashingReader,
    LineBlock,
    block_spans,
    decompressed,
    decompression_errors,
    iter_line_blocks,
)
from shardflow.split.records import (
    CsvDialect,
    CsvGrouper,
    CsvUnit,
    csv_key,
    jsonl_line,
    lines_are_utf8,
    too_long,
)
from shardflow.split.rejects import RejectWriter
from shardflow.split.sources import Source
from shardflow.split.spec import InputInfo, SplitSpec


class SplitContext:
    """What every input's split shares: the spec, the batches so far, rejects and keys."""

    def __init__(
        self,
        spec: SplitSpec,
        *,
        store: ObjectStore | None,
        layout: Layout | None,
        spool_dir: Path,
        rejects: RejectWriter,
        keys: KeyIndex | None,
        on_part: Callable[[int, Sequence[Batch]], None] | None = None,
    ) -> None:
        self.spec = spec
        self.policy = BatchPolicy.from_spec(spec)
        self.store = store
        self.layout = layout
        self.spool_dir = spool_dir
        self.rejects = rejects
        self.keys = keys
        self.batches: list[Batch] = []
        self.ordinal = 0
        self._files: list[IO[bytes]] = []
        self._on_part = on_part
        self.parts = 0  # parts handed to ``on_part`` so far
        # repeated keys are known only once every input is read: with an id field, the
        # parts are handed out at the end (each batch's skips are final by then)
        self._streaming = keys is None

    def add_batch(self, batch: Batch) -> None:
        """Record a finished batch; hand its part out as soon as the part is full."""
        self.batches.append(batch)
        if self._streaming and len(self.batches) == part_start(self.parts + 1):
            self._emit(len(self.batches))

    def finish_parts(self) -> None:
        """Hand out every part not handed out yet (the last one may be short)."""
        self._streaming = True
        while part_start(self.parts) < len(self.batches):
            self._emit(min(len(self.batches), part_start(self.parts + 1)))

    def _emit(self, end: int) -> None:
        part = self.parts
        self.parts += 1
        if self._on_part is not None:
            self._on_part(part, self.batches[part_start(part) : end])

    def track(self, f: IO[bytes]) -> IO[bytes]:
        """Have :meth:`close` close ``f`` if the split stops halfway."""
        self._files.append(f)
        return f

    def close(self) -> None:
        """Release spool files (idempotent); the temp directory itself is the caller's."""
        for f in self._files:
            f.close()
        self._files.clear()
        self.rejects.close()

    def next_batch_id(self) -> str:
        return f"b{len(self.batches):06d}"


class RangeSink:
    """Makes byte-range (or row-range) batches over the input itself."""

    def __init__(self, ctx: SplitContext, url: str, fmt: str, index: int, header: str | None):
        self.ctx, self.url, self.fmt, self.index, self.header = ctx, url, fmt, index, header
        self._start = self._line = self._ordinal = 0

    def open(self, offset: int, line: int, ordinal: int) -> None:
        self._start, self._line, self._ordinal = offset, line, ordinal

    def take(self, first: int, end: int) -> None:
        pass

    def close(self, end: int, records: int) -> None:
        fault_point("mid_split")
        self.ctx.add_batch(
            Batch(
                batch_id=self.ctx.next_batch_id(),
                source=self.url,
                format=self.fmt,
                records=records,
                first_line=self._line,
                first_ordinal=self._ordinal,
                start=self._start,
                end=end,
                source_index=self.index,
                header=self.header,
            )
        )


class WrittenSink(RangeSink):
    """Writes each batch's lines (rejects blanked) to the store as a plain object."""

    units: Sequence[bytes] = ()

    def __init__(self, ctx: SplitContext, url: str, fmt: str, index: int, header: str | None):
        super().__init__(ctx, url, fmt, index, header)
        self._file: IO[bytes] | None = None
        self._path = ctx.spool_dir / "batch.part"

    def open(self, offset: int, line: int, ordinal: int) -> None:
        super().open(offset, line, ordinal)
        if self.ctx.store is not None:
            self._file = self.ctx.track(self._path.open("wb"))
            if self.header is not None:
                self._file.write(self.header.encode(self.ctx.spec.encoding) + b"\n")

    def take(self, first: int, end: int) -> None:
        if self._file is not None and end > first:
            self._file.write(b"\n".join(self.units[first:end]) + b"\n")

    def close(self, end: int, records: int) -> None:
        fault_point("mid_split")
        batch_id = self.ctx.next_batch_id()
        key = f"<dry-run>/{batch_id}"
        if self._file is not None and self.ctx.layout is not None and self.ctx.store is not None:
            self._file.close()
            self._file = None
            key = self.ctx.layout.batch(batch_id, self.fmt)
            self.ctx.store.put_file(key, self._path)
        self.ctx.add_batch(
            Batch(
                batch_id=batch_id,
                source=key,
                format=self.fmt,
                records=records,
                first_line=self._line,
                first_ordinal=self._ordinal,
                written=True,
                source_index=self.index,
                header=self.header,
            )
        )


def split_text(
    ctx: SplitContext, source: Source, index: int, fmt: str, compression: str
) -> InputInfo:
    """Split one JSONL or CSV input; return what was read. Raises :class:`InputError`."""
    raw = source.open()
    hasher = HashingReader(raw)
    try:
        stream = decompressed(hasher, compression)
        blocks = iter_line_blocks(stream, ctx.spec.max_record_bytes)
        if fmt == "csv":
            _split_csv(ctx, source.url, index, blocks, written=compression != "none")
        else:
            _split_jsonl(ctx, source.url, index, blocks, written=compression != "none")
        digest = hasher.drain()
    except decompression_errors() as exc:
        raise InputError(f"cannot decompress {source.url} ({compression}): {exc}") from exc
    finally:
        hasher.close()
    return InputInfo(source.url, source.size, source.mtime, digest)


def _builder(ctx: SplitContext, sink: RangeSink) -> BatchBuilder:
    return BatchBuilder(ctx.policy, sink, ordinal=ctx.ordinal)


def _split_jsonl(
    ctx: SplitContext, url: str, index: int, blocks: Iterator[LineBlock], *, written: bool
) -> None:
    spec, rejects, keys = ctx.spec, ctx.rejects, ctx.keys
    sink = (WrittenSink if written else RangeSink)(ctx, url, "jsonl", index, None)
    builder = _builder(ctx, sink)
    need_text = ctx.policy.function is not None
    for block in blocks:
        lines: list[bytes] = block.lines
        spans = block_spans(block)
        base = builder.line
        kinds: list[int] | None = None
        if block.overlong >= 0:
            rejects.add(index, url, base, too_long(block.overlong, spec.max_record_bytes), lines[0])
            kinds, lines = [REJECT], [b""]
        elif keys is not None or not _all_records(lines, spec.max_record_bytes):
            if keys is not None:
                kinds, hashes = _keyed_kinds(lines, spec)
                keys.extend(hashes)
            else:
                kinds = [_cheap_kind(raw, spec) for raw in lines]
            if REJECT in kinds:
                for i, raw in enumerate(lines):
                    if kinds[i] == REJECT:
                        reason = jsonl_line(raw, spec, parse=keys is not None)[2]
                        rejects.add(index, url, base + i, reason or "", raw)
            if written and REJECT in kinds:
                lines = [b"" if k == REJECT else raw for k, raw in zip(kinds, lines, strict=True)]
        if isinstance(sink, WrittenSink):
            sink.units = lines
        if kinds is not None and kinds.count(RECORD) == len(kinds):
            kinds = None  # all records: the builder's fast path
        builder.feed(spans, kinds, texts=lines if need_text else None)
    builder.finish()
    ctx.ordinal = builder.ordinal


def _cheap_kind(raw: bytes, spec: SplitSpec) -> int:
    reason = jsonl_line(raw, spec, parse=False)[2]
    return RECORD if reason is None else REJECT if reason else BLANK


def _keyed_kinds(lines: list[bytes], spec: SplitSpec) -> tuple[list[int], list[int]]:
    """Kinds of lines whose keys are needed, and the hashes of the records' keys.

    The common case (an object with a string id) is decided inline; anything else goes
    through :func:`jsonl_line`, the one definition of the rules.
    """
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    id_field, max_bytes = spec.id_field or "", spec.max_record_bytes
    kinds: list[int] = []
    hashes: list[int] = []
    for raw in lines:
        try:
            value = loads(raw)
        except decode_error:
            value = None
        if type(value) is dict and len(raw) <= max_bytes:
            key = value.get(id_field)
            if type(key) is str and key:
                kinds.append(RECORD)
                hashes.append(hash(key))
                continue
        _value, found, reason = jsonl_line(raw, spec, parse=True)
        if reason is None and found is not None:
            kinds.append(RECORD)
            hashes.append(hash(found))
        else:
            kinds.append(REJECT if reason else BLANK)
    return kinds, hashes


def _all_records(lines: list[bytes], max_bytes: int) -> bool:
    """True when no line is blank, too long or not UTF-8 (checked in C, not line by line)."""
    lens = list(map(len, lines))
    return (
        max(lens) <= max_bytes
        and 0 not in lens
        and not any(map(bytes.isspace, lines))
        and lines_are_utf8(lines)
    )


def _split_csv(
    ctx: SplitContext, url: str, index: int, blocks: Iterator[LineBlock], *, written: bool
) -> None:
    spec, rejects, keys = ctx.spec, ctx.rejects, ctx.keys
    dialect = CsvDialect(spec)
    grouper = CsvGrouper(spec)
    sink: RangeSink | None = None
    builder: BatchBuilder | None = None
    pending: list[CsvUnit] = []  # units before the header is known
    columns = 0
    id_index = -1

    def feed(units: list[CsvUnit]) -> None:
        assert builder is not None
        assert sink is not None
        line = builder.line
        kinds: list[int] = []
        hashes: list[int] = []
        clean: list[bytes] = []
        for unit, (fields, reason) in zip(units, dialect.parse_units(units), strict=True):
            if fields is not None and len(fields) != columns:
                reason = f"expected {columns} columns, got {len(fields)}"
            elif fields is not None and id_index >= 0:
                key, reason = csv_key(fields, id_index, spec.id_field or "")
                if key is not None:
                    hashes.append(hash(key))
            if reason is None:
                kinds.append(RECORD)
                clean.append(unit.raw)
            else:
                kinds.append(REJECT if reason else BLANK)
                clean.append(b"\n" * (unit.nlines - 1))
                if reason:
                    rejects.add(index, url, line, reason, unit.raw)
            line += unit.nlines
        if keys is not None:
            keys.extend(hashes)
        if isinstance(sink, WrittenSink):
            sink.units = clean
        all_records = kinds.count(RECORD) == len(kinds)
        builder.feed(
            [u.span for u in units],
            None if all_records else kinds,
            nlines=[u.nlines for u in units],
            texts=[u.raw for u in units] if ctx.policy.function is not None else None,
        )

    def start(units: list[CsvUnit]) -> list[CsvUnit]:
        """Find the header among the first units; return the units left to feed."""
        nonlocal sink, builder, columns, id_index
        pending.extend(units)
        for i, unit in enumerate(pending):
            fields, reason = dialect.parse(unit)
            if reason == "":
                continue
            if fields is None:
                if spec.csv_header:
                    raise InputError(f"{url}: cannot read the CSV header: {reason}")
                continue
            columns = len(fields)
            if spec.csv_header:
                header = unit.raw.decode(spec.encoding).rstrip("\r")
                names, used = fields, i + 1
            else:
                names = [f"column_{n + 1}" for n in range(columns)]
                header, used = spec.csv_delimiter.join(names), 0
            if spec.id_field is not None:
                if spec.id_field not in names:
                    raise InputError(f"{url}: id field {spec.id_field!r} is not a column {names}")
                id_index = names.index(spec.id_field)
            sink = (WrittenSink if written else RangeSink)(ctx, url, "csv", index, header)
            builder = _builder(ctx, sink)
            # the header (and blank lines before it) move the offsets but are no records
            head = pending[:used]
            builder.feed([u.span for u in head], [BLANK] * used, nlines=[u.nlines for u in head])
            rest = pending[used:]
            pending.clear()
            return rest
        return []

    for block in blocks:
        units = grouper.feed(block)
        if builder is None:
            units = start(units)
        if units:
            feed(units)
    units = grouper.finish()
    if builder is None:
        units = start(units)
        if builder is None:
            return  # an empty (or blank) input: no batches
    if units:
        feed(units)
    builder.finish()
    ctx.ordinal = builder.ordinal
