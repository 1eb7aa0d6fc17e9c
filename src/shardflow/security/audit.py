"""The audit log: append-only, hash-chained records of who did what to which job.

Job submissions, dispatches, control commands (pause, resume, cancel, retry, purge,
recover) and configuration changes (rate limits) each append one entry. Entries live in
the object store, one object each, under ``audit/{seq:012d}.json``, written create-only:
of two writers that pick the same ``seq`` exactly one succeeds, and the other chains its
entry after the winner's and tries ``seq + 1``. So the log has no gaps and no forks
however many processes append at once.

An entry is ``{seq, at, actor, action, job_id, detail, prev_hash, hash}``: ``at`` is
UTC ISO-8601; ``hash`` is the SHA-256 (hex) of the canonical JSON of the entry without
``hash`` (keys sorted, no spaces, UTF-8); ``prev_hash`` is the previous entry's hash
(64 zeros for entry 0). Details are redacted before they are written.

:func:`verify` re-reads the log and names the first entry that is missing, changed,
moved or out of order. What a hash chain cannot show by itself: entries cut from the
end, or a whole chain rewritten by someone who can write the store. For those, note the
head hash that ``shardflow audit verify`` prints somewhere else and pass it back with
``--head``; on S3, bucket versioning (or Object Lock) keeps what was overwritten. With
``SHARDFLOW_AUDIT_KEY_FILE`` set (every writer and the verifier), the chain is keyed:
each ``hash`` is an HMAC-SHA256, so a whole chain cannot be rewritten without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardflow.errors import ConfigError, StoreError
from shardflow.layout import validate_id
from shardflow.security.redact import Redactor

if TYPE_CHECKING:
    from shardflow.models import Job
    from shardflow.objectstore.base import ObjectStore

AUDIT_PREFIX = "audit/"
GENESIS_HASH = "0" * 64
DEFAULT_STORAGE = ".shardflow/store"
FIELDS = ("seq", "at", "actor", "action", "job_id", "detail", "prev_hash", "hash")
_KEY = re.compile(r"audit/(\d{12})\.json")
_MAX_TRIES = 1000
KEY_FILE_ENV = "SHARDFLOW_AUDIT_KEY_FILE"

log = logging.getLogger("shardflow.audit")

__all__ = [
    "AUDIT_PREFIX",
    "GENESIS_HASH",
    "AuditEntry",
    "VerifyResult",
    "audit_key",
    "canonical_json",
    "entry_hash",
    "entry_key",
    "open_job_store",
    "read_entries",
    "record",
    "record_for_job",
    "record_limit_change",
    "submission_detail",
    "verify",
]


def entry_key(seq: int) -> str:
    """The object key of entry ``seq``."""
    if not isinstance(seq, int) or seq < 0:
        raise ValueError(f"invalid audit sequence number {seq!r}")
    return f"{AUDIT_PREFIX}{seq:012d}.json"


def canonical_json(value: Any) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(body: Mapping[str, Any], key: bytes | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of ``body`` without its ``hash`` field; with
    ``key``, HMAC-SHA256 under it (a keyed chain: see :func:`audit_key`)."""
    data = canonical_json({k: v for k, v in body.items() if k != "hash"})
    if key is not None:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def audit_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key of a keyed chain, from the file ``SHARDFLOW_AUDIT_KEY_FILE`` names (kept
    outside the workspace and the store, readable by its owner only), or None.

    Keyed, every entry's ``hash`` is an HMAC: someone who can write the store but does not
    hold the key can no longer rewrite an entry and re-chain the ones after it. Raises
    ConfigError for a key file that is missing, shorter than 32 bytes, or readable by
    others."""
    env = os.environ if environ is None else environ
    name = env.get(KEY_FILE_ENV)
    if not name:
        return None
    path = Path(name)
    try:
        mode = path.stat().st_mode
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{KEY_FILE_ENV}: cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{KEY_FILE_ENV}: {path} is readable by others; run chmod 600 {path}")
    if len(key) < 32:
        raise ConfigError(
            f"{KEY_FILE_ENV}: {path} holds {len(key)} bytes; use at least 32, e.g. "
            f"`openssl rand -hex 32 > {path}`"
        )
    return key


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    job_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> AuditEntry:
        """An entry from its stored form; ValueError unless it has exactly the fields."""
        if set(body) != set(FIELDS):
            raise ValueError(f"fields {sorted(body)} are not {sorted(FIELDS)}")
        if not isinstance(body["seq"], int) or not isinstance(body["detail"], dict):
            raise ValueError("seq must be an integer and detail an object")
        return cls(**{name: body[name] for name in FIELDS})


def _timestamp(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _exists(store: ObjectStore, seq: int) -> bool:
    return store.head(entry_key(seq)) is not None


def _next_seq(store: ObjectStore) -> int:
    """The first free sequence number, found with O(log n) HEAD requests (listing a
    long log on every append would cost a request per 1,000 entries)."""
    if not _exists(store, 0):
        return 0
    low, high = 0, 1  # low exists; find a high that does not
    while _exists(store, high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if _exists(store, middle):
            low = middle
        else:
            high = middle
    return high


def _hash_of(store: ObjectStore, seq: int) -> str:
    """The hash to chain after entry ``seq``: the hash it states, or, for an entry
    that does not parse, the hash of its bytes. A damaged entry must not stop the
    log from recording (verify reports the damage)."""
    raw = store.get_bytes(entry_key(seq))
    try:
        stated = json.loads(raw).get("hash")
    except (ValueError, AttributeError):
        stated = None
    return stated if isinstance(stated, str) else hashlib.sha256(raw).hexdigest()


def _plain(detail: Mapping[str, Any] | None, redactor: Redactor) -> dict[str, Any]:
    # JSON round trip: what is hashed is exactly what a reader parses back
    plain = json.loads(json.dumps(dict(detail or {}), default=str, allow_nan=False))
    return redactor.redact_data(plain)  # type: ignore[no-any-return]


def record(
    store: ObjectStore,
    *,
    actor: str,
    action: str,
    job_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    at: float | None = None,
    redactor: Redactor | None = None,
    key: bytes | None = None,
) -> AuditEntry:
    """Append one entry and return it; keyed with ``key``, else :func:`audit_key`.

    ``detail`` must be JSON-like (other values are written as ``str()``); its strings
    are redacted. Raises InvalidIdError for a malformed ``job_id``, and StoreError when
    the store refuses the write or the log keeps moving under contention.
    """
    if job_id is not None:
        validate_id(job_id, "job id")
    body: dict[str, Any] = {
        "at": _timestamp(time.time() if at is None else at),
        "actor": str(actor),
        "action": str(action),
        "job_id": job_id,
        "detail": _plain(detail, redactor or Redactor.from_environ()),
    }
    key = key if key is not None else audit_key()
    seq = _next_seq(store)
    prev = _hash_of(store, seq - 1) if seq else GENESIS_HASH
    for _ in range(_MAX_TRIES):
        entry = {**body, "seq": seq, "prev_hash": prev}
        entry["hash"] = entry_hash(entry, key)
        put = store.put_bytes(entry_key(seq), canonical_json(entry) + b"\n", create_only=True)
        if put.created:
            return AuditEntry.from_dict(entry)
        # another writer took this seq: chain after its entry
        prev = _hash_of(store, seq)
        seq += 1
    raise StoreError(f"could not append to the audit log in {store.url}: too much contention")


def record_limit_change(
    store: ObjectStore,
    *,
    actor: str,
    job_id: str,
    name: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    at: float | None = None,
) -> AuditEntry:
    """Record a rate-limit change of ``job_id`` (``shardflow limit set``): the limit's
    settings before (None when it was created) and after, e.g. ``{"rate": 50.0,
    "burst": 100.0}``."""
    validate_id(name, "rate limit name")
    detail = {"limit": name, "before": dict(before) if before else None, "after": dict(after)}
    return record(store, actor=actor, action="limit.set", job_id=job_id, detail=detail, at=at)


def submission_detail(config: Mapping[str, Any]) -> dict[str, Any]:
    """The audit detail of a job submission, from its config (``model_dump(mode="json")``):
    name, handler, input, and the SHA-256 of the canonical JSON of the whole config, so a
    config can later be matched to the entry without the log holding it."""
    return {
        "name": config.get("name"),
        "handler": config.get("handler"),
        "input": (config.get("input") or {}).get("path"),
        "config_sha256": hashlib.sha256(canonical_json(config)).hexdigest(),
    }


def open_job_store(job: Job) -> ObjectStore | None:
    """The object store named by ``job``'s config snapshot (``backends.storage``; a
    relative path is relative to the current folder, as for every command), else the
    default store in the snapshot's workspace; None when the job has neither (it was not
    made by submit)."""
    from shardflow.backends import AwsOptions, open_object_store

    config = job.config.get("config")
    backends = (config.get("backends") if isinstance(config, Mapping) else None) or {}
    storage = backends.get("storage")
    if not storage and job.config.get("workspace"):
        storage = str(Path(str(job.config["workspace"])) / "store")
    if not storage:
        return None
    aws = AwsOptions(
        backends.get("endpoint_url"), backends.get("region"), backends.get("kms_key_id")
    )
    return open_object_store(str(storage), aws)


def record_for_job(
    job: Job,
    *,
    actor: str,
    action: str,
    detail: Mapping[str, Any] | None = None,
    at: float | None = None,
) -> AuditEntry | None:
    """:func:`record` an action on ``job`` in the store :func:`open_job_store` names, for
    callers that hold only the state store. For a job without a config snapshot nothing
    is recorded and a warning is logged (submit always writes one)."""
    store = open_job_store(job)
    if store is None:
        log.warning("job %s has no config snapshot: %s is not in the audit log", job.job_id, action)
        return None
    return record(store, actor=actor, action=action, job_id=job.job_id, detail=detail, at=at)


def read_entries(store: ObjectStore, job_id: str | None = None) -> Iterator[dict[str, Any]]:
    """The stored entries in order, as parsed (not verified), optionally of one job.
    An object that does not parse is yielded as ``{"seq": n, "unreadable": reason}``."""
    if job_id is not None:
        validate_id(job_id, "job id")
    for info in store.list(AUDIT_PREFIX):
        match = _KEY.fullmatch(info.key)
        if match is None:
            continue
        try:
            body = json.loads(store.get_bytes(info.key))
        except ValueError as exc:
            yield {"seq": int(match.group(1)), "unreadable": f"not JSON: {exc}"}
            continue
        if not isinstance(body, dict):
            yield {"seq": int(match.group(1)), "unreadable": "not a JSON object"}
        elif job_id is None or body.get("job_id") == job_id:
            yield body


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``ok``; how many ``entries`` verified; the first entry that cannot be trusted
    (``first_bad_seq``, None when ok or when the problem is not one entry) and why;
    and the hash of the last verified entry (``head``)."""

    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head: str = GENESIS_HASH


def verify(
    store: ObjectStore, *, expect_head: str | None = None, key: bytes | None = None
) -> VerifyResult:
    """Check the whole chain; see the module docstring. ``expect_head``: a head hash
    noted earlier, which must still be in the log (so entries cut from the end, or a
    rewritten log, are caught). ``key``: the chain's HMAC key, for a keyed log (every
    entry must then carry an HMAC under it). Store errors propagate."""
    hashes: list[str] = []  # hashes[n] is entry n's, once verified
    strays: list[str] = []
    for info in store.list(AUDIT_PREFIX):
        match = _KEY.fullmatch(info.key)
        if match is None:
            strays.append(info.key)
            continue
        seq, count = int(match.group(1)), len(hashes)
        head = hashes[-1] if hashes else GENESIS_HASH
        if seq != count:
            return VerifyResult(
                False, count, count, f"entry {count} is missing (the next is {seq})", head
            )
        body, reason = _check_entry(store.get_bytes(info.key), seq, head, key)
        if body is None:
            return VerifyResult(False, count, seq, reason, head)
        if reason is not None:
            # the entry is intact but chained to something else than entry seq - 1
            earlier = hashes[-2] if len(hashes) > 1 else GENESIS_HASH
            return VerifyResult(False, count - 1, seq - 1, reason, earlier)
        hashes.append(body["hash"])
    head = hashes[-1] if hashes else GENESIS_HASH
    if strays:
        reason = f"unexpected objects in the log: {strays[:5]}"
        return VerifyResult(False, len(hashes), None, reason, head)
    if expect_head is not None and expect_head not in hashes:
        reason = (
            f"the head {expect_head} is not in the log: entries were removed from its end "
            "or the log was rewritten"
        )
        return VerifyResult(False, len(hashes), len(hashes), reason, head)
    return VerifyResult(True, len(hashes), None, None, head)


def _check_entry(
    raw: bytes, seq: int, prev: str, key: bytes | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(the entry, None) when entry ``seq`` is intact and chained to ``prev``;
    (None, why) when it is damaged; (the entry, why) when it is intact but chained to
    another hash (so the entry before it is the first one not to trust)."""
    try:
        body = AuditEntry.from_dict(json.loads(raw)).to_dict()
    except (ValueError, TypeError, AttributeError) as exc:
        return None, f"entry {seq} does not parse as an audit entry: {exc}"
    if body["seq"] != seq:
        return None, f"entry stored as {seq} says it is entry {body['seq']}: moved or reordered"
    if not hmac.compare_digest(entry_hash(body, key), str(body["hash"])):
        keyed = " under the audit key" if key is not None else ""
        return None, (
            f"entry {seq} was changed after it was written (its hash does not match{keyed})"
        )
    if body["prev_hash"] != prev:
        if seq == 0:
            return None, "entry 0 does not start the chain (its prev_hash is not zeros)"
        return body, (
            f"entry {seq - 1} is not the entry that entry {seq} was chained to: entry "
            f"{seq - 1} was replaced with its hash recomputed (or entry {seq} was)"
        )
    return body, None
