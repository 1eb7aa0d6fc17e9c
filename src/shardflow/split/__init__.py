"""Splitting the input into batches, and reading a batch back (the worker's hot path).

Key types: :class:`~.spec.SplitSpec` (what to read, how to batch), :class:`~.spec.SplitResult`
(the plan the coordinator persists), :class:`~shardflow.models.Batch` and
:class:`~.spec.Record`. Entry points: :func:`.plan.split_input`, :func:`.plan.plan_summary`,
:func:`.read.iter_batch`, :func:`.read.batch_item_keys`.

Rooms: ``sources`` (where bytes come from; ``register_scheme`` for s3://), ``formats``
(compression, line blocks), ``records`` (the one definition of a record and of every
reject reason, shared by split and reader), ``batching``, ``dedup``, ``rejects``,
``text`` / ``parquet`` (per-format split), ``plan``, ``read``.

Do not: parse JSON per record at split time unless keys are needed; loop over bytes in
Python; hold a whole input (or an over-long line) in memory; let the split and the reader
disagree on what a record is (change :mod:`.records`, never one side only).
"""
