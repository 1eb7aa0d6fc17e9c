"""Parquet inputs: row-range batches planned from the footer, and their reader.

Planning reads only the metadata (and the id column, when keys are needed); a batch is
the rows ``[start, end)`` of one file. Line numbers of Parquet records are 1-based row
numbers. Rows whose id is missing or unusable are rejected, by the split and the reader
alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from shardflow.errors import ConfigError, InputError
from shardflow.models import Batch
from shardflow.split.batching import RECORD, REJECT, BatchBuilder
from shardflow.split.records import key_of
from shardflow.split.sources import LocalSource, RangeReader, Source, open_source
from shardflow.split.spec import InputInfo, Record, SplitSpec

if TYPE_CHECKING:
    import pyarrow.parquet as pq

    from shardflow.split.text import SplitContext

#: rows converted to Python objects at once by the reader
READ_ROWS = 8192


def open_parquet(source: Source) -> pq.ParquetFile:
    """A ParquetFile over ``source``; :class:`InputError` if it is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target: Any = str(source.path) if isinstance(source, LocalSource) else RangeReader(source)
    try:
        return pq.ParquetFile(target)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {source.url} as Parquet: {exc}") from exc


def split_parquet(ctx: SplitContext, source: Source, index: int) -> InputInfo:
    """Plan row-range batches for one Parquet input (reading no data but the id column)."""
    from shardflow.split.text import RangeSink

    if ctx.policy.function is not None:
        raise ConfigError("a batching function needs text lines: it cannot batch Parquet input")
    pf = open_parquet(source)
    id_field = ctx.spec.id_field
    if id_field is not None and id_field not in pf.schema_arrow.names:
        raise InputError(f"{source.url}: id field {id_field!r} is not a column")
    builder = BatchBuilder(ctx.policy, RangeSink(ctx, source.url, "parquet", index, None))
    builder.ordinal = ctx.ordinal
    meta = pf.metadata
    for rg in range(meta.num_row_groups):
        info = meta.row_group(rg)
        rows = info.num_rows
        if rows == 0:
            continue
        weight = max(1, info.total_byte_size // rows)
        kinds: list[int] | None = None
        if id_field is not None and ctx.keys is not None:
            column = pf.read_row_group(rg, columns=[id_field]).column(0).to_pylist()
            kinds, hashes = [], []
            base = builder.line
            for i, value in enumerate(column):
                key, reason = key_of({id_field: value}, id_field)
                if key is None:
                    kinds.append(REJECT)
                    ctx.rejects.add(index, source.url, base + i, reason or "", str(value))
                else:
                    kinds.append(RECORD)
                    hashes.append(hash(key))
            ctx.keys.extend(hashes)
        builder.feed([1] * rows, kinds, weights=[weight] * rows)
    builder.finish()
    ctx.ordinal = builder.ordinal
    return InputInfo(source.url, source.size, source.mtime, None)


def iter_parquet(
    batch: Batch, spec: SplitSpec, start_after: int, columns: list[str] | None = None
) -> Iterator[Record]:
    """The records of a row-range batch, in row order (see :func:`split.read.iter_batch`)."""
    pf = open_parquet(open_source(batch.source))
    start, end = batch.start, batch.end if batch.end is not None else pf.metadata.num_rows
    groups, first_row, row = [], -1, 0
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if row < end and row + n > start:
            groups.append(rg)
            first_row = row if first_row < 0 else first_row
        row += n
    id_field, skip = spec.id_field, set(batch.skip)
    ordinal = 0
    row = first_row
    new = tuple.__new__
    for rb in pf.iter_batches(batch_size=READ_ROWS, row_groups=groups, columns=columns):
        lo, hi = max(start - row, 0), min(end - row, rb.num_rows)
        if hi > lo:
            for i, value in enumerate(rb.slice(lo, hi - lo).to_pylist(), start=row + lo + 1):
                if id_field is not None and key_of(value, id_field)[0] is None:
                    continue
                if ordinal > start_after and ordinal not in skip:
                    yield new(Record, (ordinal, i, value, None, None))
                ordinal += 1
        row += rb.num_rows
        if row >= end:
            break
