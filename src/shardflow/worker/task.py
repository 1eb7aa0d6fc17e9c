"""One attempt of one task: stream the batch through the handler, checkpoint, publish.

The commit protocol (DESIGN.md): result objects go to attempt-scoped keys with their
SHA-256; the ``.done`` marker is published create-only (the first attempt to publish
wins, a loser adopts the winner); the task row is committed fenced on the version this
worker holds. A marker found at lease time is adopted without re-running.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from shardflow.errors import ConflictError, StopRequested, classify
from shardflow.faults import fault_point
from shardflow.manifests import ResultMarker, TaskManifest, decode_manifest, encode_manifest
from shardflow.models import Batch, Task
from shardflow.observability.logging import TaskLogFile, reset_log_fields, set_log_fields
from shardflow.queue.base import SQS_MAX_DELAY_SECONDS
from shardflow.split.read import iter_batch
from shardflow.statestore.base import (
    commit_task,
    fail_task,
    release_task,
    retry_later,
)
from shardflow.worker.checkpoint import Checkpoint
from shardflow.worker.context import TaskContext
from shardflow.worker.env import WorkerEnv, task_message
from shardflow.worker.items import Chunk, ItemRunner
from shardflow.worker.lease import LeaseKeeper
from shardflow.worker.metrics import AttemptMetrics, metric_counters
from shardflow.worker.results import write_failures, write_results

__all__ = ["TaskAttempt", "WorkerEnv", "task_message"]

log = logging.getLogger("shardflow.worker")


class TaskAttempt:
    """Runs one leased attempt; :meth:`run` returns the outcome's name."""

    def __init__(self, env: WorkerEnv, task: Task, receipt: str) -> None:
        self.env = env
        self.task = task
        self.receipt = receipt
        self.keeper = LeaseKeeper(
            env.state,
            env.queue,
            task,
            receipt,
            ttl=env.lease_ttl,
            interval=env.heartbeat,
            clock=env.clock,
        )

    def run(self) -> str:
        env, task = self.env, self.task
        token = set_log_fields(
            job_id=task.job_id, task_id=task.task_id, attempt=task.attempt, slot=env.slot
        )
        log_path = env.paths.log_file(task.job_id, task.task_id, task.attempt)
        try:
            with TaskLogFile(log_path, env.log_level):
                self.keeper.start()
                try:
                    return self._run()
                finally:
                    self.keeper.stop()
        finally:
            reset_log_fields(token)
            self._upload_log(log_path)

    def _upload_log(self, path: Path) -> None:
        if self.env.store.url.startswith("file:") or not path.exists():
            return  # a local store shares the workspace: the log is already beside the job
        try:
            self.env.store.put_file(
                self.env.layout.task_log(self.task.task_id, self.task.attempt), path
            )
        except Exception as exc:
            log.warning("could not upload the task log: %s", exc)

    def _run(self) -> str:
        env, task = self.env, self.task
        self.metrics = AttemptMetrics()
        self.ctx: TaskContext | None = None
        fault_point("after_lease")
        marker = self._read_marker()
        if marker is not None:
            log.info("adopting the published result of attempt %d", marker.attempt)
            return self._commit(marker)
        try:
            manifest = decode_manifest(
                env.store.get_bytes(env.layout.task_manifest(task.task_id)),
                TaskManifest,
                name=env.layout.task_manifest(task.task_id),
            )
            return self._process(manifest.batch)
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

    def _process(self, batch: Batch) -> str:
        env, task = self.env, self.task
        ckpt = Checkpoint(env.paths.checkpoint_dir(task.job_id, task.task_id), task.attempt)
        log.info("attempt %d of %s started: batch %s", task.attempt, task.task_id, batch.batch_id)
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
        items = ItemRunner(
            handler=env.handler,
            policy=env.policy,
            rules=env.rules,
            key_column=env.key_column,
            task_id=task.task_id,
            attempt=task.attempt,
            sleep=env.sleep,
            item_timeout=env.item_timeout,
            secret_fields=env.job.config.get("config", {}).get("secrets", ()),
        )
        chunk = Chunk()
        last = ckpt.progress.last_ordinal
        count = 0
        flushed_at = env.clock()
        pending: list[tuple[int, int, str, dict[str, Any]]] = []
        id_field = env.spec.id_field
        stopped = False
        batch_id, per_batch, run_item = batch.batch_id, env.handler.per_batch, items.run_item
        every, interval, clock = env.checkpoint_every, env.checkpoint_interval, env.clock
        mask = 255 if every >= 1024 else 15  # a small checkpoint_every is kept closely
        # the common case (a per-item function, no timeout) is inlined: this loop runs
        # once per item, so every call and attribute lookup saved here counts
        fast, process = items.item_timeout is None and not per_batch, items.process
        try:
            for rec in iter_batch(batch, spec=env.spec, store=env.store, start_after=last):
                # the stop flag and the clock are looked at every `mask + 1` items, not every item
                if not count & mask and count:
                    if self._should_stop():
                        stopped = True
                        break
                    if count >= every or clock() - flushed_at >= interval:
                        items.run_pending(chunk, batch, pending, ctx)
                        self._flush(ckpt, chunk, last)
                        fault_point("mid_batch")
                        chunk, count, flushed_at = Chunk(), 0, clock()
                last = ordinal = rec.ordinal
                count += 1
                value = rec.value
                if value is None:
                    chunk.failures.append(
                        items.reject_record(batch, rec.line, rec.error or "malformed", rec.raw)
                    )
                    chunk.rejected += 1
                    continue
                if id_field is None:
                    key = f"{batch_id}:{ordinal}"
                else:
                    ident = value.get(id_field)
                    if ident is None:
                        chunk.failures.append(
                            items.reject_record(
                                batch, rec.line, f"missing id field {id_field!r}", None
                            )
                        )
                        chunk.rejected += 1
                        continue
                    key = ident if type(ident) is str else str(ident)
                if fast:
                    try:
                        out = process(value, ctx)
                    except Exception as exc:
                        items.failed_item(chunk, batch, rec.line, key, value, ctx, exc)
                        continue
                    if type(out) is dict:
                        chunk.rows.append(out)
                        chunk.keys.append(key)
                        chunk.succeeded += 1
                    else:
                        items.add_unchecked(chunk, batch, rec.line, key, out)
                elif per_batch:
                    pending.append((ordinal, rec.line, key, value))
                else:
                    run_item(chunk, batch, rec.line, key, value, ctx)
            items.run_pending(chunk, batch, pending, ctx)
        except StopRequested:
            # told to stop while the handler waited for tokens: the items since the last
            # checkpoint are not all done, so none of them is kept; they run again
            log.info("stop requested while the handler waited for rate-limit tokens")
            return self._stop_attempt(ckpt)
        if stopped:
            self._flush(ckpt, chunk, last)
            return self._stop_attempt(ckpt)
        # the last chunk goes from memory into the result: checkpointing it would only
        # write, fsync and read back rows that are about to be published anyway
        return self._publish(ckpt, chunk, last)

    def _should_stop(self) -> bool:
        return self.env.stop.is_set() or self.keeper.lost.is_set()

    def _flush(self, ckpt: Checkpoint, chunk: Chunk, last: int) -> None:
        if (
            not (chunk.rows or chunk.failures or chunk.succeeded)
            and last == ckpt.progress.last_ordinal
        ):
            return
        ckpt.save(
            last_ordinal=last,
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
        env = self.env
        ckpt.close()
        if self.keeper.lost.is_set():
            log.warning("stopping: the lease was lost; nothing committed")
            return "lost"
        log.info(
            "stopping on request after item %d; releasing the task", ckpt.progress.last_ordinal
        )
        with self.keeper.lock:
            try:
                self.keeper.set_task(
                    release_task(
                        env.state, self.keeper.task, now=env.clock(), reason="worker stopped"
                    )
                )
            except ConflictError:
                return "lost"
        env.queue.extend(self.receipt, 0)
        return "released"

    def _publish(self, ckpt: Checkpoint, tail: Chunk, last: int) -> str:
        env, task = self.env, self.task
        if self.keeper.lost.is_set():
            ckpt.close()
            return "lost"
        progress = ckpt.progress.plus(
            last_ordinal=last,
            rows=len(tail.rows),
            succeeded=tail.succeeded,
            failed=tail.failed,
            rejected=tail.rejected,
        )
        scratch = ckpt.dir
        result_key = env.layout.result(task.task_id, task.attempt)
        result_file = scratch / "result.parquet"
        columns = write_results(
            ckpt.part_paths(),
            result_file,
            env.key_column,
            compression=env.output_compression,
            tail=(tail.rows, tail.keys),
        )
        failures = ckpt.failure_records() + tail.failures
        failures_key = env.layout.failures(task.task_id, task.attempt) if failures else None
        fault_point("mid_upload")
        put = env.store.put_file(result_key, result_file)
        fput = None
        if failures_key is not None:
            failures_file = scratch / "failures.parquet"
            write_failures(failures, failures_file)
            fput = env.store.put_file(failures_key, failures_file)
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
            columns=tuple(columns),
        )
        marker_key = env.layout.marker(task.task_id)
        published = env.store.put_bytes(marker_key, encode_manifest(marker), create_only=True)
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
        outcome = self._commit(marker, measured)
        if outcome == "succeeded":
            ckpt.discard_task()
        else:
            ckpt.close()
        return outcome

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

    def _commit(self, marker: ResultMarker, metrics: dict[str, float] | None = None) -> str:
        env = self.env
        with self.keeper.lock:
            if self.keeper.lost.is_set():
                return "lost"
            try:
                done = commit_task(
                    env.state,
                    self.keeper.task,
                    now=env.clock(),
                    result_attempt=marker.attempt,
                    items_total=marker.items_total,
                    items_succeeded=marker.items_succeeded,
                    items_failed=marker.items_failed,
                    items_rejected=marker.items_rejected,
                    rows=marker.rows,
                    metrics=metrics,
                    metric_counters=metric_counters(metrics or {}),
                )
            except ConflictError:
                log.warning(
                    "commit refused: another worker holds the task; it will adopt the marker"
                )
                self.keeper.lost.set()
                return "lost"
            self.keeper.set_task(done)
        env.queue.delete(self.receipt)
        log.info(
            "task committed: %d rows, %d items failed, %d rejected",
            marker.rows,
            marker.items_failed,
            marker.items_rejected,
        )
        return "succeeded"

    def _attempt_failed(self, exc: Exception) -> str:
        env = self.env
        cls = classify(exc, env.rules)
        message = f"{type(exc).__qualname__}: {exc}"
        log.error("attempt failed (%s): %s", cls.value, message, exc_info=exc)
        with self.keeper.lock:
            current = self.keeper.task
            try:
                if env.policy.should_retry(cls, current.attempts_used):
                    delay = env.policy.backoff(current.attempts_used)
                    self.keeper.set_task(
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
                    self.keeper.set_task(
                        fail_task(
                            env.state, current, now=env.clock(), error_class=cls, message=message
                        )
                    )
                    outcome = "failed"
            except ConflictError:
                return "lost"
        env.queue.delete(self.receipt)
        return outcome
