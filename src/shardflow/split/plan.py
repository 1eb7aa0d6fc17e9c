"""The split plan: every input cut into batches, rejects written, repeated keys resolved.

:func:`split_input` is deterministic: the same inputs and spec give the same batches, the
same batch objects and the same rejects parts, byte for byte. It keeps no state between
runs, so a split killed at any point is simply run again. Memory stays bounded by the
block size plus 8 bytes per record when keys are checked.
"""

from __future__ import annotations

import dataclasses
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from shardflow.layout import Layout
from shardflow.models import Batch
from shardflow.objectstore.base import ObjectStore
from shardflow.split.dedup import KeyIndex
from shardflow.split.formats import detect_compression, detect_format
from shardflow.split.parquet import split_parquet
from shardflow.split.rejects import RejectWriter
from shardflow.split.sources import expand_inputs
from shardflow.split.spec import InputInfo, SplitResult, SplitSpec
from shardflow.split.text import SplitContext, split_text

#: how many repeated keys are quoted in the result
DUPLICATE_EXAMPLES = 10


def split_input(
    spec: SplitSpec,
    *,
    job_id: str,
    store: ObjectStore,
    layout: Layout,
    now: float,
    on_part: Callable[[int, Sequence[Batch]], None] | None = None,
) -> SplitResult:
    """Split the inputs of ``spec`` into batches for job ``job_id``.

    Writes batch objects (compressed inputs only) and one rejects part per input with
    rejects into ``store``; returns the plan for the caller to persist. ``on_part(part,
    batches)`` is called for each part of the batches (:mod:`shardflow.catalog`) as soon
    as it is complete, so that its tasks can start while the split goes on; with an id
    field, once every input is read (a batch's repeated keys are known only then).
    ``now`` is not stored, so that a re-run returns an equal result. Raises
    :class:`InputError` for an input that cannot be read at all and :class:`ConfigError`
    for an unusable spec.
    """
    del now  # the plan must not depend on when it was made
    if layout.job_id != job_id:
        raise ValueError(f"layout is for job {layout.job_id!r}, not {job_id!r}")
    with tempfile.TemporaryDirectory(prefix="shardflow-split-") as tmp:
        return _run(spec, store, layout, Path(tmp), on_part)


def plan_summary(spec: SplitSpec) -> dict[str, Any]:
    """What a split would make, for ``submit --dry-run``: reads the inputs, writes nothing.

    Repeated keys are not looked for (that needs the written batches), so ``records``
    may include some that the real split will reject as duplicates.
    """
    with tempfile.TemporaryDirectory(prefix="shardflow-dry-") as tmp:
        result = _run(spec, None, None, Path(tmp))
    sizes = [b.records for b in result.batches]
    return {
        "inputs": [
            {"url": i.url, "size": i.size, "format": f, "compression": c}
            for i, (f, c) in zip(result.inputs, _kinds(spec), strict=True)
        ],
        "records": result.records,
        "rejected": result.rejected,
        "batches": len(result.batches),
        "largest_batch": max(sizes, default=0),
        "smallest_batch": min(sizes, default=0),
    }


def _kinds(spec: SplitSpec) -> list[tuple[str, str]]:
    return [
        (detect_format(s.url, spec.format), detect_compression(s, spec.compression))
        for s in expand_inputs(spec.paths)
    ]


def _run(
    spec: SplitSpec,
    store: ObjectStore | None,
    layout: Layout | None,
    tmp: Path,
    on_part: Callable[[int, Sequence[Batch]], None] | None = None,
) -> SplitResult:
    sources = expand_inputs(spec.paths)
    ctx = SplitContext(
        spec,
        store=store,
        layout=layout,
        spool_dir=tmp,
        rejects=RejectWriter(store, layout, tmp),
        keys=KeyIndex() if spec.id_field is not None else None,
        on_part=on_part,
    )
    try:
        inputs: list[InputInfo] = []
        for index, source in enumerate(sources):
            fmt = detect_format(source.url, spec.format)
            if fmt == "parquet":
                inputs.append(split_parquet(ctx, source, index))
            else:
                compression = detect_compression(source, spec.compression)
                inputs.append(split_text(ctx, source, index, fmt, compression))
        duplicates: list[str] = []
        if ctx.keys is not None and store is not None:
            duplicates = _resolve_duplicates(ctx, inputs, store)
        ctx.finish_parts()
        batches = tuple(ctx.batches)
        reject_keys = ctx.rejects.flush()
    finally:
        ctx.close()
    return SplitResult(
        batches=batches,
        records=sum(b.records - len(b.skip) for b in batches),
        rejected=ctx.rejects.count,
        duplicates=len(duplicates),
        duplicate_examples=tuple(duplicates[:DUPLICATE_EXAMPLES]),
        inputs=tuple(inputs),
        reject_keys=reject_keys,
    )


def _resolve_duplicates(
    ctx: SplitContext, inputs: list[InputInfo], store: ObjectStore
) -> list[str]:
    """Reject every later occurrence of a repeated key; return one line per duplicate.

    Only the batches holding candidate hashes are re-read, and exact keys decide. Memory
    grows with the number of repeated keys, not with the input.
    """
    assert ctx.keys is not None
    firsts = [b.first_ordinal for b in ctx.batches]
    first_seen: dict[str, tuple[int, int]] = {}
    examples: list[str] = []
    at, wanted = -1, set[int]()
    for ordinal in chain(ctx.keys.candidate_ordinals(), [-1]):
        here = bisect_right(firsts, ordinal) - 1 if ordinal >= 0 else -1
        if here != at and wanted:
            examples.extend(_reject_repeats(ctx, inputs, store, at, wanted, first_seen))
            wanted = set()
        at = here
        if ordinal >= 0:
            wanted.add(ordinal - firsts[at])
    return examples


def _reject_repeats(
    ctx: SplitContext,
    inputs: list[InputInfo],
    store: ObjectStore,
    at: int,
    wanted: set[int],
    first_seen: dict[str, tuple[int, int]],
) -> list[str]:
    from shardflow.split.read import iter_keys

    batch = ctx.batches[at]
    url = inputs[batch.source_index].url
    skip: list[int] = []
    examples: list[str] = []
    for ordinal, line, key, text in iter_keys(batch, ctx.spec, store):
        if ordinal not in wanted:
            continue
        first = first_seen.get(key)
        if first is None:
            first_seen[key] = (batch.source_index, line)
            continue
        where = f"{inputs[first[0]].url}:{first[1]}"
        skip.append(ordinal)
        ctx.rejects.add_late(
            batch.source_index, url, line, f"duplicate key {key!r} (first seen at {where})", text
        )
        examples.append(f"{key!r} at {url}:{line} (first seen at {where})")
    if skip:
        ctx.batches[at] = dataclasses.replace(batch, skip=tuple(skip))
    return examples


__all__ = ["plan_summary", "split_input"]
