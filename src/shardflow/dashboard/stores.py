"""Opening a job's object store from its config snapshot, once per storage URL."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from shardflow.errors import ShardflowError
from shardflow.models import Job

if TYPE_CHECKING:
    from shardflow.objectstore.base import ObjectStore

log = logging.getLogger("shardflow.dashboard")


class StoreOpener:
    """Callable ``job → ObjectStore | None``: the store named by the job's
    ``backends.storage``, opened once per URL; None (logged once) if it cannot be
    opened here, so a page shows what it can instead of failing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stores: dict[str, ObjectStore | None] = {}

    def __call__(self, job: Job) -> ObjectStore | None:
        backends = (job.config.get("config") or {}).get("backends") or {}
        url = str(backends.get("storage") or "")
        if not url:
            return None
        with self._lock:
            if url in self._stores:
                return self._stores[url]
            from shardflow.backends import AwsOptions, open_object_store

            aws = AwsOptions(backends.get("endpoint_url"), backends.get("region"))
            store: ObjectStore | None
            try:
                store = open_object_store(url, aws)
            except (ShardflowError, ImportError, OSError) as exc:
                log.warning("dashboard: cannot open object store of job %s: %s", job.job_id, exc)
                store = None
            self._stores[url] = store
            return store
