"""Aggregation: discover committed results, merge them in a tree, publish the output.

Only what ``.done`` markers name is read, and every object's SHA-256 is checked against
its marker. Each tree node writes its own marker, so a re-run skips finished nodes (a node
whose children changed, after ``shardflow retry``, is rebuilt). The final dataset is
published under ``output/`` as whole objects, then ``_MANIFEST.json``, then ``_SUCCESS``
last: a reader that sees ``_SUCCESS`` sees a complete, checksummed output.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shardflow.aggregate.finalize import convert_output
from shardflow.aggregate.merge import Input, fetch, merge_files, read_footers, unified_schema
from shardflow.aggregate.plan import plan_tree
from shardflow.errors import ChecksumMismatchError, CorruptResultError, NotFoundError
from shardflow.faults import fault_point
from shardflow.layout import Layout
from shardflow.manifests import (
    AggregateMarker,
    OutputFile,
    OutputManifest,
    ResultMarker,
    decode_manifest,
    encode_manifest,
)
from shardflow.models import Task, TaskStatus
from shardflow.objectstore.base import ObjectStore
from shardflow.split.read import batch_item_keys
from shardflow.split.spec import SplitSpec
from shardflow.statestore.base import StateStore, reopen_task
from shardflow.worker.results import failure_schema

log = logging.getLogger("shardflow.aggregate")


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    fan_in: int = 64
    key_column: str = "_key"
    output_format: str = "parquet"
    output_name: str = "results"
    compression: str = "zstd"
    declared_schema: Mapping[str, str] | None = None


def all_tasks(state: StateStore, job_id: str) -> list[Task]:
    tasks: list[Task] = []
    after: str | None = None
    while True:
        page = state.list_tasks(job_id, None, limit=1000, after=after)
        tasks.extend(page)
        if len(page) < 1000:
            return sorted(tasks, key=lambda t: t.task_id)
        after = page[-1].task_id


def read_markers(store: ObjectStore, layout: Layout, tasks: Sequence[Task]) -> list[ResultMarker]:
    def one(task: Task) -> ResultMarker:
        key = layout.marker(task.task_id)
        return decode_manifest(store.get_bytes(key), ResultMarker, name=key)

    if store.url.startswith("file:"):
        return [one(t) for t in tasks]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, tasks))


def aggregate_job(
    *,
    job_id: str,
    state: StateStore,
    store: ObjectStore,
    spec: AggregateSpec,
    split: SplitSpec,
    scratch: Path,
    now: Callable[[], float],
) -> OutputManifest:
    layout = Layout(job_id)
    scratch.mkdir(parents=True, exist_ok=True)
    tasks = all_tasks(state, job_id)
    done = [t for t in tasks if t.status is TaskStatus.SUCCEEDED]
    markers = read_markers(store, layout, done)
    verify_results(store, state, layout, done, markers, scratch, now)
    # verified just now (a remote object was downloaded into scratch, checked, and is
    # reused): the merge does not hash every result a second time
    leaves = [Input(m.result_key, None) for m in markers]
    root, rows = build_tree(store, layout, leaves, spec, scratch)
    fault_point("mid_aggregation")

    failure_inputs = [
        Input(m.failures_key, m.failures_sha256) for m in markers if m.failures_key is not None
    ]
    extra = scratch / "extra-failures.parquet"
    write_extra_failures(
        extra,
        _task_failures(store, layout, split, [t for t in tasks if t.status is TaskStatus.FAILED]),
        _split_rejects(store, layout),
    )
    files, failures, rejects = publish_outputs(
        store, layout, spec, scratch, root, failure_inputs, extra
    )
    manifest = OutputManifest(
        job_id=job_id,
        created_at=now(),
        format=spec.output_format,
        files=tuple(files),
        rows=rows,
        failures=failures,
        rejects=rejects,
        items_total=sum(m.items_succeeded for m in markers) + failures,
        schema=tuple(_schema_pairs(store, root, scratch)),
    )
    store.put_bytes(layout.output_manifest(), encode_manifest(manifest))
    store.put_bytes(layout.output_success(), b"")
    shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def verify_results(
    store: ObjectStore,
    state: StateStore,
    layout: Layout,
    tasks: Sequence[Task],
    markers: Sequence[ResultMarker],
    scratch: Path,
    now: Callable[[], float],
) -> None:
    """Check every committed result against its marker before merging anything.

    A result that is missing or whose bytes do not match is repaired: its marker is
    removed, its task reopened (its counts taken back) and re-queued, and
    :class:`CorruptResultError` tells the caller to run the map phase again.
    """
    bad: list[str] = []
    for task, marker in zip(tasks, markers, strict=True):
        try:
            fetch(store, Input(marker.result_key, marker.result_sha256), scratch)
            if marker.failures_key is not None:
                fetch(store, Input(marker.failures_key, marker.failures_sha256), scratch)
        except (ChecksumMismatchError, NotFoundError) as exc:
            log.error("task %s: committed result failed verification: %s", task.task_id, exc)
            store.delete(layout.marker(task.task_id))
            reopen_task(
                state,
                task,
                now=now(),
                reason=f"result failed verification: {exc}",
                items_succeeded=marker.items_succeeded,
                items_failed=marker.items_failed,
                items_rejected=marker.items_rejected,
                rows=marker.rows,
            )
            bad.append(task.task_id)
    if bad:
        raise CorruptResultError(bad)


def build_tree(
    store: ObjectStore, layout: Layout, leaves: Sequence[Input], spec: AggregateSpec, scratch: Path
) -> tuple[Input, int]:
    current = list(leaves)
    rows = 0
    levels = plan_tree(len(leaves), spec.fan_in)
    for level_nodes in levels:
        nxt: list[Input] = []
        for node in level_nodes:
            children = [current[i] for i in node.children]
            marker_key = layout.aggregate_marker(node.level, node.index)
            existing = _read_node_marker(store, marker_key)
            if existing is not None and list(existing.children) == [c.key for c in children]:
                nxt.append(Input(existing.key, existing.sha256))
                rows = existing.rows
                continue
            paths = [
                fetch(store, child, scratch, f"in-{node.level}-{node.index}-{n}.parquet")
                for n, child in enumerate(children)
            ]
            footers = read_footers(paths)
            schema = unified_schema(footers, spec.key_column, spec.declared_schema)
            if not paths:
                import pyarrow as pa

                schema = pa.schema([(spec.key_column, pa.string())])
            out = scratch / f"node-{node.level}-{node.index}.parquet"
            final = node.level == len(levels)
            rows = merge_files(
                paths,
                out,
                schema,
                compression=spec.compression if final else "lz4",
                footers=footers,
            )
            put = store.put_file(layout.aggregate_node(node.level, node.index), out)
            marker = AggregateMarker(
                job_id=layout.job_id,
                level=node.level,
                node=node.index,
                key=put.key,
                sha256=put.sha256,
                size=put.size,
                rows=rows,
                children=tuple(c.key for c in children),
            )
            store.put_bytes(marker_key, encode_manifest(marker))
            out.unlink(missing_ok=True)
            for path in paths:
                if path.parent == scratch:
                    path.unlink(missing_ok=True)
            nxt.append(Input(put.key, put.sha256))
        current = nxt
    return current[0], rows


def _read_node_marker(store: ObjectStore, key: str) -> AggregateMarker | None:
    if store.head(key) is None:
        return None
    return decode_manifest(store.get_bytes(key), AggregateMarker, name=key)


def _task_failures(
    store: ObjectStore, layout: Layout, split: SplitSpec, failed: Sequence[Task]
) -> Iterator[dict[str, Any]]:
    """Failure records for every item of a task that failed as a whole."""
    from shardflow.manifests import TaskManifest

    for task in failed:
        key = layout.task_manifest(task.task_id)
        batch = decode_manifest(store.get_bytes(key), TaskManifest, name=key).batch
        for _ordinal, item in batch_item_keys(batch, split, store):
            yield {
                "key": item,
                "kind": "failed",
                "error_class": (task.error_class or "unknown"),
                "exception": None,
                "message": f"task failed after {task.attempt} attempts: {task.error_message}",
                "traceback": None,
                "attempt": task.attempt,
                "task_id": task.task_id,
                "source": batch.source,
                "line": None,
            }


def _split_rejects(store: ObjectStore, layout: Layout) -> Iterator[dict[str, Any]]:
    for info in store.list(layout.rejects_prefix()):
        for line in store.get_bytes(info.key).splitlines():
            if not line.strip():
                continue
            rec = orjson.loads(line)
            text = rec.get("text")
            yield {
                "key": None,
                "kind": "rejected",
                "error_class": "rejected",
                "exception": None,
                "message": f"{rec.get('reason')}: {text}" if text else rec.get("reason"),
                "traceback": None,
                "attempt": None,
                "task_id": None,
                "source": rec.get("source"),
                "line": rec.get("line"),
            }


def write_extra_failures(dest: Path, *sources: Iterator[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = failure_schema()
    with pq.ParquetWriter(dest, schema, compression="zstd") as writer:
        for source in sources:
            chunk: list[dict[str, Any]] = []
            for rec in source:
                chunk.append(rec)
                if len(chunk) >= 50_000:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    chunk = []
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))


def publish_outputs(
    store: ObjectStore,
    layout: Layout,
    spec: AggregateSpec,
    scratch: Path,
    root: Input,
    failure_inputs: Sequence[Input],
    extra: Path,
) -> tuple[list[OutputFile], int, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = [convert_output(store, layout, root, spec, scratch)]
    paths = [
        fetch(store, inp, scratch, f"failures-{n}.parquet") for n, inp in enumerate(failure_inputs)
    ]
    paths.append(extra)
    schema = failure_schema()
    counts = {"failed": 0, "rejected": 0}
    outs = {kind: scratch / f"{kind}.parquet" for kind in counts}
    writers = {kind: pq.ParquetWriter(outs[kind], schema, compression="zstd") for kind in counts}
    try:
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
                for kind, writer in writers.items():
                    part = batch.filter(pc.equal(batch.column("kind"), pa.scalar(kind)))
                    if part.num_rows:
                        writer.write_batch(part.cast(schema))
                        counts[kind] += part.num_rows
    finally:
        for writer in writers.values():
            writer.close()
    for kind, name in (("failed", "failures"), ("rejected", "rejects")):
        put = store.put_file(layout.output(name, "parquet"), outs[kind])
        files.append(OutputFile(key=put.key, sha256=put.sha256, size=put.size, rows=counts[kind]))
    return files, counts["failed"], counts["rejected"]


def _schema_pairs(store: ObjectStore, root: Input, scratch: Path) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    path = fetch(store, Input(root.key, None), scratch, "root-schema.parquet")
    return [(f.name, str(f.type)) for f in pq.read_schema(path)]
