"""One attempt of one task: stream the batch through the handler, checkpoint, publish.

The commit protocol (docs/design.md): result objects go to attempt-scoped keys with their
SHA-256; the ``.done`` marker is published create-only (the first attempt to publish wins,
a loser adopts the winner). :meth:`TaskAttempt.run` ends there and hands the slot a
:class:`Finished` attempt: the slot commits the task row, fenced on the version it holds,
together with the other attempts of its commit group, after one flush of their objects
(:mod:`shardflow.worker.commit`). A marker found at lease time is adopted without re-running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from shardflow.catalog import TaskCatalog
from shardflow.errors import ConflictError, StopRequested, classify
from shardflow.faults import fault_point
from shardflow.manifests import ResultMarker, decode_manifest, encode_manifest
from shardflow.models import Batch, Task
from shardflow.observability.logging import TaskLogFile, reset_log_fields, set_log_fields
from shardflow.queue.base import SQS_MAX_DELAY_SECONDS
from shardflow.split.read import iter_batch
from shardflow.statestore.base import fail_task, release_task, retry_later
from shardflow.worker.checkpoint import Checkpoint
from shardflow.worker.context import TaskContext
from shardflow.worker.env import WorkerEnv, task_message
from shardflow.worker.items import CHECKPOINT, STOP, Chunk, ItemRunner
from shardflow.worker.lease import LeaseKeeper
from shardflow.worker.metrics import AttemptMetrics
from shardflow.worker.results import (
    RESULT_FORMAT,
    failures_table,
    ipc_bytes,
    result_table,
)

__all__ = ["Finished", "SlotTools", "TaskAttempt", "WorkerEnv", "task_message"]

log = logging.getLogger("shardflow.worker")


@dataclass(frozen=True)
class SlotTools:
    """What a slot keeps across its attempts: its leases, the task catalog, the item loop."""

    leases: LeaseKeeper
    catalog: TaskCatalog
    items: ItemRunner


@dataclass(frozen=True)
class Finished:
    """An attempt whose ``.done`` marker is published (or adopted): the slot commits its
    task row with its group. ``metrics`` is None for an adopted marker."""

    task_id: str
    receipt: str
    marker: ResultMarker
    metrics: dict[str, float] | None
    checkpoint: Checkpoint | None


class TaskAttempt:
    """Runs one leased attempt; :meth:`run` returns a :class:`Finished` attempt to commit,
    or the name of how it ended otherwise (``retry``, ``failed``, ``lost``, ``released``)."""

    def __init__(self, env: WorkerEnv, tools: SlotTools, task: Task, receipt: str) -> None:
        self.env = env
        self.tools = tools
        self.task = task
        self.receipt = receipt
        self.ctx: TaskContext | None = None

    def run(self) -> Finished | str:
        env, task = self.env, self.task
        token = set_log_fields(
            job_id=task.job_id, task_id=task.task_id, attempt=task.attempt, slot=env.slot
        )
        # the task's log file is created by its first record at the configured level: a
        # task that runs cleanly writes none
        log_file = TaskLogFile(
            lambda: env.paths.log_file(task.job_id, task.task_id, task.attempt),
            env.log_level,
            redacting=env.redacting,
        )
        try:
            with log_file:
                return self._run()
        finally:
            reset_log_fields(token)
            if log_file.handler.file is not None:
                self._upload_log(log_file.path)

    def _upload_log(self, path: Path) -> None:
        if self.env.store.url.startswith("file:"):
            return  # a local store shares the workspace: the log is already beside the job
        try:
            self.env.store.put_file(
                self.env.layout.task_log(self.task.task_id, self.task.attempt), path
            )
        except Exception as exc:
            log.warning("could not upload the task log: %s", exc)

    def _run(self) -> Finished | str:
        task = self.task
        self.metrics = AttemptMetrics()
        fault_point("after_lease")
        # only an earlier attempt can have published a marker: the first needs no look
        marker = self._read_marker() if task.attempt > 1 else None
        if marker is not None:
            log.info("adopting the published result of attempt %d", marker.attempt)
            return Finished(task.task_id, self.receipt, marker, None, None)
        try:
            return self._process(self.tools.catalog.batch(task.task_id))
        except ConflictError:
            return "lost"
        except Exception as exc:
            return self._attempt_failed(exc)

    def _read_marker(self) -> ResultMarker | None:
        key = self.env.layout.marker(self.task.task_id)
        if self.env.store.head(key) is None:
            return None
        return decode_manifest(self.env.store.get_bytes(key), ResultMarker, name=key)

    # -- processing -------------------------------------------------------------------

    def _process(self, batch: Batch) -> Finished | str:
        env, task, items = self.env, self.task, self.tools.items
        ckpt = Checkpoint(env.paths.checkpoint_dir(task.job_id, task.task_id), task.attempt)
        log.debug("attempt %d of %s started: batch %s", task.attempt, task.task_id, batch.batch_id)
        if ckpt.progress.chunks:
            log.info("resuming after item %d", ckpt.progress.last_ordinal)
        if batch.end is not None and not batch.written:
            self.metrics.bytes_read = batch.end - batch.start
        ctx = self.ctx = TaskContext(
            job_id=task.job_id,
            task_id=task.task_id,
            batch_id=batch.batch_id,
            attempt=task.attempt,
            slot=env.slot,
            logger=logging.getLogger("shardflow.handler"),
            limiter=env.limiter,
            should_stop=self._should_stop,
        )
        items.start(task.task_id, task.attempt, batch)
        every, interval, clock = env.checkpoint_every, env.checkpoint_interval, env.clock
        chunk = Chunk(ckpt.progress.last_ordinal)
        flushed_at = clock()

        def due(count: int) -> str | None:
            if self._should_stop():
                return STOP
            if count >= every or clock() - flushed_at >= interval:
                return CHECKPOINT
            return None

        records = iter_batch(batch, spec=env.spec, store=env.store, start_after=chunk.last)
        try:
            while (why := items.run_chunk(records, chunk, ctx, due)) == CHECKPOINT:
                self._save(ckpt, chunk)
                fault_point("mid_batch")
                chunk, flushed_at = Chunk(chunk.last), clock()
        except StopRequested:
            # told to stop while the handler waited for tokens: the items since the last
            # checkpoint are not all done, so none of them is kept; they run again
            log.info("stop requested while the handler waited for rate-limit tokens")
            return self._stop_attempt(ckpt)
        if why == STOP:
            self._save(ckpt, chunk)
            return self._stop_attempt(ckpt)
        # the last chunk goes from memory into the result: checkpointing it would only
        # write, fsync and read back rows that are about to be published anyway
        return self._publish(ckpt, chunk)

    def _should_stop(self) -> bool:
        return self.env.stop.is_set() or self.tools.leases.lost(self.task.task_id)

    def _save(self, ckpt: Checkpoint, chunk: Chunk) -> None:
        if (
            not (chunk.rows or chunk.failures or chunk.succeeded)
            and chunk.last == ckpt.progress.last_ordinal
        ):
            return
        ckpt.save(
            last_ordinal=chunk.last,
            rows=chunk.rows,
            keys=chunk.keys,
            key_column=self.env.key_column,
            failures=chunk.failures,
            succeeded=chunk.succeeded,
            failed=chunk.failed,
            rejected=chunk.rejected,
        )

    # -- ending ----------------------------------------------------------------------

    def _stop_attempt(self, ckpt: Checkpoint) -> str:
        env, leases, task_id = self.env, self.tools.leases, self.task.task_id
        ckpt.close()
        if leases.lost(task_id):
            log.warning("stopping: the lease was lost; nothing committed")
            return "lost"
        log.info(
            "stopping on request after item %d; releasing the task", ckpt.progress.last_ordinal
        )
        with leases.lock:
            try:
                leases.set_task(
                    release_task(
                        env.state, leases.task(task_id), now=env.clock(), reason="worker stopped"
                    )
                )
            except ConflictError:
                return "lost"
        env.queue.extend(self.receipt, 0)
        return "released"

    def _publish(self, ckpt: Checkpoint, tail: Chunk) -> Finished | str:
        env, task = self.env, self.task
        if self.tools.leases.lost(task.task_id):
            ckpt.close()
            return "lost"
        progress = ckpt.progress.plus(
            last_ordinal=tail.last,
            rows=len(tail.rows),
            succeeded=tail.succeeded,
            failed=tail.failed,
            rejected=tail.rejected,
        )
        table = result_table(ckpt.part_paths(), tail.rows, tail.keys, env.key_column)
        result_key = env.layout.result(task.task_id, task.attempt, RESULT_FORMAT)
        failures = ckpt.failure_records() + tail.failures
        failures_key = (
            env.layout.failures(task.task_id, task.attempt, RESULT_FORMAT) if failures else None
        )
        fault_point("mid_upload")
        # durable with the commit group's flush, before any task row names them
        put = env.store.put_bytes(result_key, ipc_bytes(table, env.result_codec), durable=False)
        fput = None
        if failures_key is not None:
            data = ipc_bytes(failures_table(failures), env.result_codec)
            fput = env.store.put_bytes(failures_key, data, durable=False)
        fault_point("after_result_write", corrupt=lambda: self._corrupt(result_key))
        marker = ResultMarker(
            job_id=task.job_id,
            task_id=task.task_id,
            attempt=task.attempt,
            owner=env.slot,
            created_at=env.clock(),
            result_key=result_key,
            result_sha256=put.sha256,
            result_size=put.size,
            rows=progress.rows,
            failures_key=failures_key,
            failures_sha256=fput.sha256 if fput else None,
            failures_size=fput.size if fput else 0,
            items_total=progress.succeeded + progress.failed,
            items_succeeded=progress.succeeded,
            items_failed=progress.failed,
            items_rejected=progress.rejected,
            columns=tuple(table.column_names),
        )
        marker_key = env.layout.marker(task.task_id)
        published = env.store.put_bytes(
            marker_key, encode_manifest(marker), create_only=True, durable=False
        )
        fault_point("after_marker")
        if not published.created:
            winner = decode_manifest(env.store.get_bytes(marker_key), ResultMarker, name=marker_key)
            if winner.attempt != task.attempt:
                log.info("attempt %d published first; adopting it", winner.attempt)
                self._discard([result_key, failures_key])
            marker = winner
        self.metrics.bytes_written = put.size + (fput.size if fput else 0)
        measured = self.metrics.finish(
            items=progress.succeeded + progress.failed + progress.rejected,
            failures=failures,
            handler_metrics=self.ctx.metrics if self.ctx else {},
            limiter_metrics={**env.limiter.metrics(), **(self.ctx.api if self.ctx else {})},
        )
        ckpt.close()
        return Finished(task.task_id, self.receipt, marker, measured, ckpt)

    def _corrupt(self, key: str) -> None:
        """Fault injection only: flip the stored result's bytes after its checksum was taken."""
        path = self.env.store.local_path(key)
        if path is not None:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))

    def _discard(self, keys: list[str | None]) -> None:
        """Delete this attempt's losing objects; where the worker may not delete (its AWS
        role cannot), they are left for the sweeper (`shardflow recover`)."""
        for key in keys:
            if key is None:
                continue
            try:
                self.env.store.delete(key)
            except Exception as exc:
                log.info("left %s for the sweeper: %s", key, exc)

    def _attempt_failed(self, exc: Exception) -> str:
        env, leases, task_id = self.env, self.tools.leases, self.task.task_id
        if leases.lost(task_id):
            # another worker holds the task (and may have cleaned this attempt's scratch up)
            log.warning("lease lost: attempt abandoned (%s: %s)", type(exc).__name__, exc)
            return "lost"
        cls = classify(exc, env.rules)
        message = f"{type(exc).__qualname__}: {exc}"
        log.error("attempt failed (%s): %s", cls.value, message, exc_info=exc)
        with leases.lock:
            current = leases.task(task_id)
            try:
                if env.policy.should_retry(cls, current.attempts_used):
                    delay = env.policy.backoff(current.attempts_used)
                    leases.set_task(
                        retry_later(
                            env.state,
                            current,
                            now=env.clock(),
                            delay=delay,
                            error_class=cls,
                            message=message,
                        )
                    )
                    env.queue.send(
                        task_message(current.job_id, current.task_id),
                        delay_seconds=min(delay, SQS_MAX_DELAY_SECONDS),
                    )
                    outcome = "retry"
                else:
                    leases.set_task(
                        fail_task(
                            env.state, current, now=env.clock(), error_class=cls, message=message
                        )
                    )
                    outcome = "failed"
            except ConflictError:
                return "lost"
        env.queue.delete(self.receipt)
        return outcome
