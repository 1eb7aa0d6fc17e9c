"""Aggregation: committed results streamed into the output, in task order, as they commit.

:class:`Aggregation` walks the job's tasks in task order. Each SUCCEEDED task's result is
read once, checked against the SHA-256 its ``.done`` marker records, and appended to the
output file (row groups of 128k rows); a FAILED task's items become failure records. While
the map phase runs, ``shardflow run`` advances it between its polls, so when the last task
commits only the tail is left: the last results, the file's footer, the failure and reject
files, ``_MANIFEST.json``, then ``_SUCCESS`` last. A reader that sees ``_SUCCESS`` sees a
complete, checksummed output; nothing partial is ever under ``output/``.

The output's schema comes from the first results (about 128k rows of them): a result that
does not fit it (a new column, a type that would have to change) stops the streaming, and
:meth:`Aggregation.finish` writes the output again in one pass with the schema of all
results unified (docs/design.md: never a column dropped silently). So does a task whose
state changed after it was taken (a failed task retried and committed). A result that
fails its checksum, or whose marker is gone, is repaired: its marker is removed, its task
reopened and re-run, and the walk waits for it.

Killed, the aggregation starts over from the first task: the output file is not
resumable, everything before it (the map) is.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shardflow.aggregate.failures import FailureFiles
from shardflow.aggregate.finalize import GROUP_ROWS, OutputSink, open_sink
from shardflow.aggregate.merge import conform, fits, read_verified, unified_schema
from shardflow.errors import (
    ChecksumMismatchError,
    CorruptResultError,
    NotFoundError,
    TasksNotFinalError,
)
from shardflow.faults import fault_point
from shardflow.layout import Layout
from shardflow.manifests import (
    OutputFile,
    OutputManifest,
    ResultMarker,
    decode_manifest,
    encode_manifest,
)
from shardflow.models import Task, TaskStatus
from shardflow.objectstore.base import ObjectStore
from shardflow.split.spec import SplitSpec
from shardflow.statestore.base import StateStore, reopen_task, status_counter

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("shardflow.aggregate")

PAGE = 1000  # task rows read per look at the state store, at most


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    key_column: str = "_key"
    output_format: str = "parquet"
    output_name: str = "results"
    compression: str = "zstd"
    declared_schema: Mapping[str, str] | None = None


class _Reopened(Exception):
    """A committed result failed verification: its task was reopened to run again."""


class Aggregation:
    """The job's output, built as its tasks commit; see the module docstring."""

    def __init__(
        self,
        *,
        job_id: str,
        state: StateStore,
        store: ObjectStore,
        spec: AggregateSpec,
        split: SplitSpec,
        scratch: Path,
        now: Callable[[], float],
    ) -> None:
        self.job_id = job_id
        self.state = state
        self.store = store
        self.spec = spec
        self.split = split
        self.scratch = scratch
        self.now = now
        self.layout = Layout(job_id)
        self._reset()

    def _reset(self) -> None:
        self.after: str | None = None  # the last task taken, in task order
        self._page = 8
        self.taken: dict[TaskStatus, int] = {}
        self.reopened: list[str] = []
        self.items_succeeded = 0
        self.failure_objects: list[tuple[str, str | None]] = []
        self.failed_tasks: list[str] = []
        self.sink: OutputSink | None = None
        self.schema: pa.Schema | None = None
        self._fitting: list[pa.Schema] = []
        self.held: list[pa.Table] = []
        self.held_rows = 0
        self.diverged = False

    # -- while the map runs ------------------------------------------------------------

    def advance(self, budget: float | None = None) -> int:
        """Take every task that is final, in task order, up to the first that is not;
        stop after ``budget`` seconds. Returns how many tasks were taken."""
        started = time.monotonic()
        count = 0
        while budget is None or time.monotonic() - started < budget:
            # a page about as long as the run of final tasks last seen: while tasks commit
            # one by one, a look costs a few rows, not a thousand
            limit = self._page
            page = self.state.list_tasks(self.job_id, None, limit=limit, after=self.after)
            for task in page:
                if not task.status.is_final:
                    self._page = max(8, min(PAGE, 2 * count))
                    return count
                try:
                    self._take(task)
                except _Reopened:
                    return count
                self.after = task.task_id
                count += 1
            self._page = min(PAGE, 2 * limit)
            if len(page) < limit:
                break
        return count

    def _take(self, task: Task) -> None:
        status = task.status
        if status is TaskStatus.SUCCEEDED:
            marker, table = self._result(task)
            self.items_succeeded += marker.items_succeeded
            if marker.failures_key is not None:
                self.failure_objects.append((marker.failures_key, marker.failures_sha256))
            self._append(table)
        elif status is TaskStatus.FAILED:
            self.failed_tasks.append(task.task_id)
        self.taken[status] = self.taken.get(status, 0) + 1

    def _result(self, task: Task) -> tuple[ResultMarker, pa.Table]:
        """The task's marker and verified result; a bad one reopens the task."""
        key = self.layout.marker(task.task_id)
        marker: ResultMarker | None = None
        try:
            marker = decode_manifest(self.store.get_bytes(key), ResultMarker, name=key)
            table = read_verified(self.store, marker.result_key, marker.result_sha256)
            if marker.failures_key is not None:
                read_verified(self.store, marker.failures_key, marker.failures_sha256)
        except (ChecksumMismatchError, NotFoundError) as exc:
            self._reopen(task, key, marker, exc)
            raise _Reopened(task.task_id) from exc
        return marker, table

    def _reopen(
        self, task: Task, marker_key: str, marker: ResultMarker | None, exc: Exception
    ) -> None:
        """Remove the marker and run the task again, its counts taken back (from the
        marker; from the task row when the marker itself is gone)."""
        log.error("task %s: committed result failed verification: %s", task.task_id, exc)
        self.store.delete(marker_key)
        reopen_task(
            self.state,
            task,
            now=self.now(),
            reason=f"result failed verification: {exc}",
            items_succeeded=marker.items_succeeded if marker else task.items_succeeded,
            items_failed=marker.items_failed if marker else task.items_failed,
            items_rejected=marker.items_rejected if marker else 0,
            rows=marker.rows if marker else task.rows,
        )
        self.reopened.append(task.task_id)

    def _append(self, table: pa.Table) -> None:
        if self.diverged:
            return
        if self.sink is None:
            self.held.append(table)
            self.held_rows += table.num_rows
            if self.held_rows >= GROUP_ROWS:
                self._open_sink()
            return
        assert self.schema is not None
        if not any(table.schema == s for s in self._fitting):
            if not fits(self.schema, table.schema, self.spec.declared_schema or {}):
                log.info("a result does not fit the output's schema: merging again at the end")
                self._diverge()
                return
            self._fitting.append(table.schema)
        self.sink.write(conform(table, self.schema))

    def _open_sink(self) -> None:
        try:
            schema = unified_schema(
                [t.schema for t in self.held], self.spec.key_column, self.spec.declared_schema
            )
        except Exception as exc:  # pyarrow's type errors: the full pass will say which
            log.info("results' schemas differ (%s): merging again at the end", exc)
            self._diverge()
            return
        self.schema = schema
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.sink = self._new_sink(schema)
        held, self.held, self.held_rows = self.held, [], 0
        for table in held:
            self._append(table)

    def _new_sink(self, schema: pa.Schema) -> OutputSink:
        spec = self.spec
        path = self.scratch / f"output.{spec.output_format}"
        return open_sink(spec.output_format, path, schema, spec.compression, spec.output_name)

    def _diverge(self) -> None:
        self.diverged = True
        self.held, self.held_rows = [], 0
        if self.sink is not None:
            self.sink.abort()
            self.sink = None

    # -- at the end --------------------------------------------------------------------

    def finish(self) -> OutputManifest:
        """Take the rest (every task must be final), publish the output and its manifest.

        Raises :class:`CorruptResultError` when a result failed verification: its task was
        reopened, and the map phase must run it again first; :class:`SchemaDriftError`
        when the results' types cannot be made one.
        """
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Give the output file up; the next :meth:`finish` starts over."""
        if self.sink is not None:
            self.sink.abort()
        self._reset()

    def _finish(self) -> OutputManifest:
        self.advance()
        if self.reopened:
            reopened, self.reopened = self.reopened, []
            raise CorruptResultError(reopened)
        counters = self.state.read_counters(self.job_id)
        waiting = sum(counters.get(status_counter(s), 0) for s in TaskStatus if not s.is_final)
        if waiting:
            raise TasksNotFinalError(f"job {self.job_id}: {waiting} tasks are not final yet")
        if self._stale():
            log.info("tasks changed after they were merged: merging again")
            self._reset()
            self.diverged = True
            self.advance()
        if self.diverged:
            self._merge_again()
        elif self.sink is None:
            self._open_sink_now()
        fault_point("mid_aggregation")
        assert self.sink is not None
        rows = self.sink.rows
        sha = self.sink.close()
        key = self.layout.output(self.spec.output_name, self.spec.output_format)
        put = self.store.put_file(key, self.sink.path, sha256=sha, move=True)
        files = [OutputFile(key=put.key, sha256=put.sha256, size=put.size, rows=rows)]
        extra, failures, rejects = FailureFiles(
            self.store, self.state, self.layout, self.split, self.scratch
        ).write(self.failure_objects, self.failed_tasks)
        files += extra
        assert self.schema is not None
        manifest = OutputManifest(
            job_id=self.job_id,
            created_at=self.now(),
            format=self.spec.output_format,
            files=tuple(files),
            rows=rows,
            failures=failures,
            rejects=rejects,
            items_total=self.items_succeeded + failures,
            schema=tuple((f.name, str(f.type)) for f in self.schema),
        )
        self.store.put_bytes(self.layout.output_manifest(), encode_manifest(manifest))
        self.store.put_bytes(self.layout.output_success(), b"")
        shutil.rmtree(self.scratch, ignore_errors=True)
        return manifest

    def _stale(self) -> bool:
        """Whether a task taken changed since: the task counts no longer match."""
        counters = self.state.read_counters(self.job_id)
        return any(
            counters.get(status_counter(s), 0) != self.taken.get(s, 0)
            for s in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)
        )

    def _open_sink_now(self) -> None:
        """The results were too few to fill a row group: open the output with them."""
        self._open_sink()
        if self.diverged:
            self._merge_again()

    def _merge_again(self) -> None:
        """The full pass: every result's schema first, then every result in order."""
        succeeded = [t for t in self._final_tasks() if t.status is TaskStatus.SUCCEEDED]
        schemas = [table.schema for _task, table in self._results(succeeded)]
        self.schema = unified_schema(schemas, self.spec.key_column, self.spec.declared_schema)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.sink = self._new_sink(self.schema)
        for _task, table in self._results(succeeded):
            self.sink.write(conform(table, self.schema))

    def _final_tasks(self) -> Iterator[Task]:
        after: str | None = None
        while True:
            page = self.state.list_tasks(self.job_id, None, limit=1000, after=after)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].task_id

    def _results(self, tasks: Sequence[Task]) -> Iterator[tuple[Task, pa.Table]]:
        for task in tasks:
            yield task, self._result(task)[1]


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
    """Aggregate a job whose tasks are all final, in one go."""
    return Aggregation(
        job_id=job_id, state=state, store=store, spec=spec, split=split, scratch=scratch, now=now
    ).finish()
