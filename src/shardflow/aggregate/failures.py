"""The output's failure files: ``output/failures.parquet`` (the items that failed, in
results, and every item of a task that failed as a whole) and ``output/rejects.parquet``
(the input lines the split and the workers rejected)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shardflow.aggregate.merge import read_verified
from shardflow.catalog import TaskCatalog
from shardflow.layout import Layout
from shardflow.manifests import OutputFile
from shardflow.objectstore.base import ObjectStore
from shardflow.split.read import batch_item_keys
from shardflow.split.spec import SplitSpec
from shardflow.statestore.base import StateStore
from shardflow.worker.results import failure_schema

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, slots=True)
class FailureFiles:
    store: ObjectStore
    state: StateStore
    layout: Layout
    split: SplitSpec
    scratch: Path

    def write(
        self, failure_objects: Sequence[tuple[str, str | None]], failed_tasks: Sequence[str]
    ) -> tuple[list[OutputFile], int, int]:
        """Write both files from the results' failure objects (key, SHA-256) and the tasks
        that failed as a whole; return them with the counts of failed and rejected items."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        schema = failure_schema()
        counts = {"failed": 0, "rejected": 0}
        outs = {kind: self.scratch / f"{kind}.parquet" for kind in counts}
        self.scratch.mkdir(parents=True, exist_ok=True)
        writers = {k: pq.ParquetWriter(outs[k], schema, compression="zstd") for k in counts}
        try:
            for table in self._tables(failure_objects, failed_tasks):
                for kind, writer in writers.items():
                    part = table.filter(pc.equal(table.column("kind"), pa.scalar(kind)))
                    if part.num_rows:
                        writer.write_table(part.cast(schema))
                        counts[kind] += part.num_rows
        finally:
            for writer in writers.values():
                writer.close()
        files = []
        for kind, name in (("failed", "failures"), ("rejected", "rejects")):
            put = self.store.put_file(self.layout.output(name, "parquet"), outs[kind], move=True)
            files.append(
                OutputFile(key=put.key, sha256=put.sha256, size=put.size, rows=counts[kind])
            )
        return files, counts["failed"], counts["rejected"]

    def _tables(
        self, failure_objects: Sequence[tuple[str, str | None]], failed_tasks: Sequence[str]
    ) -> Iterator[pa.Table]:
        import pyarrow as pa

        for key, sha in failure_objects:
            yield read_verified(self.store, key, sha)
        schema = failure_schema()
        for records in _chunks(self._task_failures(failed_tasks)):
            yield pa.Table.from_pylist(records, schema=schema)
        for records in _chunks(self._split_rejects()):
            yield pa.Table.from_pylist(records, schema=schema)

    def _task_failures(self, failed_tasks: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Failure records for every item of a task that failed as a whole."""
        catalog = TaskCatalog(self.store, self.layout)
        for task_id in failed_tasks:
            task = self.state.get_task(self.layout.job_id, task_id)
            if task is None:
                continue
            batch = catalog.batch(task_id)
            for _ordinal, item in batch_item_keys(batch, self.split, self.store):
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

    def _split_rejects(self) -> Iterator[dict[str, Any]]:
        for info in self.store.list(self.layout.rejects_prefix()):
            for line in self.store.get_bytes(info.key).splitlines():
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


def _chunks(
    records: Iterator[dict[str, Any]], size: int = 50_000
) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
