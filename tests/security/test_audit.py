"""The audit log: appends chain, concurrent writers never fork it, and verify names the
first entry that was changed, removed, moved or cut."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardflow.errors import ConfigError, InvalidIdError
from shardflow.objectstore.base import ObjectInfo
from shardflow.objectstore.local import LocalObjectStore
from shardflow.security.audit import (
    GENESIS_HASH,
    audit_key,
    entry_key,
    read_entries,
    record,
    record_limit_change,
    verify,
)

WRITERS = 4
PER_WRITER = 15


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "store")


def fill(store: LocalObjectStore, n: int) -> None:
    for i in range(n):
        record(store, actor="cli:alice@login1", action="job.pause", job_id=f"job-{i}", at=1e9 + i)


def entry_path(store: LocalObjectStore, seq: int) -> Path:
    return store.root / entry_key(seq)


def test_entries_chain_by_hash_from_zeros(store: LocalObjectStore) -> None:
    first = record(store, actor="cli:alice@h", action="job.submit", job_id="j1", at=0.5)
    second = record(
        store, actor="dashboard:ops", action="job.cancel", job_id="j1", detail={"tasks": 3}
    )
    assert (first.seq, second.seq) == (0, 1)
    assert first.at == "1970-01-01T00:00:00.500000Z"
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    stored = json.loads(entry_path(store, 1).read_bytes())
    assert stored == second.to_dict()
    body = {k: v for k, v in stored.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == stored["hash"]
    assert verify(store).ok


def test_details_are_redacted_before_they_are_written(
    store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEO_API_TOKEN", "tok-0123456789")
    entry = record(
        store,
        actor="cli:a@h",
        action="job.submit",
        job_id="j1",
        detail={"input": "https://u:hunter2@h/in.jsonl", "note": "tok-0123456789"},
    )
    raw = entry_path(store, entry.seq).read_text(encoding="utf-8")
    assert "hunter2" not in raw
    assert "tok-0123456789" not in raw
    assert entry.detail == {"input": "https://u:***@h/in.jsonl", "note": "***"}


def test_limit_changes_are_recorded_with_before_and_after(store: LocalObjectStore) -> None:
    entry = record_limit_change(
        store,
        actor="cli:a@h",
        job_id="j1",
        name="geo_api",
        before={"rate": 50.0, "burst": 100.0},
        after={"rate": 20.0, "burst": 40.0},
    )
    assert entry.action == "limit.set"
    assert entry.detail == {
        "limit": "geo_api",
        "before": {"rate": 50.0, "burst": 100.0},
        "after": {"rate": 20.0, "burst": 40.0},
    }


@pytest.mark.parametrize("job_id", ["../x", "a/b", "A", "x" * 64, "."])
def test_a_malformed_job_id_is_refused_before_anything_is_written(
    store: LocalObjectStore, job_id: str
) -> None:
    with pytest.raises(InvalidIdError):
        record(store, actor="a", action="job.pause", job_id=job_id)
    assert list(store.list("audit/")) == []


def _append_many(root: str, writer: int, start: multiprocessing.synchronize.Event) -> None:
    store = LocalObjectStore(Path(root))
    start.wait(30)
    for i in range(PER_WRITER):
        record(store, actor=f"writer-{writer}", action="job.pause", detail={"i": i})


def test_concurrent_writers_make_one_chain_without_gaps(store: LocalObjectStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_append_many, args=(str(store.root), w, start)) for w in range(WRITERS)
    ]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    result = verify(store)
    assert result.ok, result.reason
    assert result.entries == WRITERS * PER_WRITER
    entries = list(read_entries(store))
    assert [e["seq"] for e in entries] == list(range(WRITERS * PER_WRITER))
    for writer in range(WRITERS):
        mine = [e["detail"]["i"] for e in entries if e["actor"] == f"writer-{writer}"]
        assert mine == list(range(PER_WRITER))  # each writer's entries, in its order


class CountingStore(LocalObjectStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.heads = 0
        self.lists = 0

    def head(self, key: str) -> ObjectInfo | None:
        self.heads += 1
        return super().head(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.lists += 1
        return super().list(prefix)


def test_an_append_to_a_long_log_takes_few_requests(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "store")
    fill(store, 130)
    store.heads = store.lists = 0
    record(store, actor="a", action="job.resume")
    # the free slot is found by galloping and bisecting HEADs: no listing
    assert store.lists == 0
    assert store.heads <= 2 * 8 + 2  # log2(130) < 8


def test_verify_names_an_entry_whose_detail_was_changed(store: LocalObjectStore) -> None:
    fill(store, 6)
    path = entry_path(store, 3)
    body = json.loads(path.read_bytes())
    body["detail"] = {"tasks": 0}
    path.write_text(json.dumps(body), encoding="utf-8")
    result = verify(store)
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.entries == 3
    assert "changed" in (result.reason or "")


def test_verify_names_an_entry_rewritten_with_its_hash_recomputed(
    store: LocalObjectStore,
) -> None:
    fill(store, 6)
    path = entry_path(store, 2)
    body = json.loads(path.read_bytes())
    body["actor"] = "someone-else"
    body["hash"] = hashlib.sha256(
        json.dumps(
            {k: v for k, v in body.items() if k != "hash"},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    ).hexdigest()
    path.write_text(json.dumps(body), encoding="utf-8")
    result = verify(store)
    assert not result.ok
    assert result.first_bad_seq == 2
    assert "replaced" in (result.reason or "")


def test_verify_names_a_deleted_entry(store: LocalObjectStore) -> None:
    fill(store, 6)
    entry_path(store, 4).unlink()
    result = verify(store)
    assert (result.ok, result.first_bad_seq, result.entries) == (False, 4, 4)
    assert "missing" in (result.reason or "")


def test_verify_names_the_first_of_two_swapped_entries(store: LocalObjectStore) -> None:
    fill(store, 6)
    a, b = entry_path(store, 1), entry_path(store, 2)
    first, second = a.read_bytes(), b.read_bytes()
    a.write_bytes(second)
    b.write_bytes(first)
    result = verify(store)
    assert (result.ok, result.first_bad_seq) == (False, 1)


def test_entries_cut_from_the_end_are_caught_with_a_noted_head(store: LocalObjectStore) -> None:
    fill(store, 5)
    noted = verify(store).head
    entry_path(store, 4).unlink()
    assert verify(store).ok  # the chain alone cannot tell
    result = verify(store, expect_head=noted)
    assert (result.ok, result.first_bad_seq) == (False, 4)
    assert verify(store, expect_head=verify(store).head).ok


def test_objects_that_are_not_entries_fail_verification(store: LocalObjectStore) -> None:
    fill(store, 2)
    store.put_bytes("audit/notes.txt", b"hello")
    result = verify(store)
    assert not result.ok
    assert "audit/notes.txt" in (result.reason or "")


def test_a_damaged_entry_does_not_stop_new_entries(store: LocalObjectStore) -> None:
    fill(store, 3)
    entry_path(store, 2).write_bytes(b"{not json")
    entry = record(store, actor="cli:a@h", action="job.cancel", job_id="j1")
    assert entry.seq == 3
    result = verify(store)
    assert (result.ok, result.first_bad_seq) == (False, 2)


def test_an_action_on_a_job_is_recorded_in_the_store_its_snapshot_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from shardflow.models import Job
    from shardflow.security.audit import record_for_job

    named = Job("j1", "n", config={"config": {"backends": {"storage": str(tmp_path / "s")}}})
    entry = record_for_job(named, actor="cli:a@h", action="job.pause", at=1.0)
    assert entry is not None
    assert entry.job_id == "j1"
    assert verify(LocalObjectStore(tmp_path / "s")).entries == 1
    # no storage in the snapshot: the default store of the job's workspace
    workspace = Job("j2", "n", config={"workspace": str(tmp_path / "ws")})
    record_for_job(workspace, actor="cli:a@h", action="job.resume")
    assert verify(LocalObjectStore(tmp_path / "ws" / "store")).entries == 1
    # no snapshot at all (not made by submit): nothing is written, and a warning says so
    assert record_for_job(Job("j3", "n"), actor="cli:a@h", action="job.pause") is None
    assert "not in the audit log" in caplog.text


def _rechain_from(store: LocalObjectStore, start: int) -> None:
    """What someone who can write the store does: rewrite entry ``start`` and recompute
    every SHA-256 and link after it, so an unkeyed chain verifies again."""
    seqs = sorted(int(p.stem) for p in (store.root / "audit").glob("*.json"))
    prev = json.loads(entry_path(store, start - 1).read_bytes())["hash"]
    for seq in seqs[start:]:
        body = json.loads(entry_path(store, seq).read_bytes())
        if seq == start:
            body["actor"] = "cli:someone-else@h"
        body["prev_hash"] = prev
        canonical = json.dumps(
            {k: v for k, v in body.items() if k != "hash"},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        body["hash"] = prev = hashlib.sha256(canonical.encode()).hexdigest()
        entry_path(store, seq).write_text(json.dumps(body), encoding="utf-8")


def test_a_keyed_chain_catches_a_log_rewritten_and_rechained(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text("k" * 64, encoding="utf-8")
    key_file.chmod(0o600)
    key = audit_key({"SHARDFLOW_AUDIT_KEY_FILE": str(key_file)})
    assert key is not None
    for i in range(5):
        record(store, actor="cli:alice@h", action="job.pause", job_id=f"job-{i}", key=key)
    assert verify(store, key=key).ok
    _rechain_from(store, 2)
    assert not verify(store, key=key).ok  # keyed: the rewrite is caught
    assert verify(store, key=key).first_bad_seq == 2


def test_an_unkeyed_chain_rechained_needs_a_noted_head(store: LocalObjectStore) -> None:
    fill(store, 5)
    head = verify(store).head
    _rechain_from(store, 2)
    assert verify(store).ok  # what an unkeyed chain cannot see by itself …
    assert not verify(store, expect_head=head).ok  # … and a head noted elsewhere can


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("k" * 64, 0o644, "readable by others"),
        ("short", 0o600, "at least 32"),
    ],
)
def test_an_audit_key_file_must_be_private_and_long(
    tmp_path: Path, content: str, mode: int, message: str
) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_text(content, encoding="utf-8")
    key_file.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        audit_key({"SHARDFLOW_AUDIT_KEY_FILE": str(key_file)})
    assert audit_key({}) is None
