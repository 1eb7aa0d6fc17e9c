"""The ObjectStore contract (shardflow.objectstore.base), run against every case in
objectstore_cases.py."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import queue as stdlib_queue
import time
import tracemalloc
from pathlib import Path

import pytest

from shardflow.errors import ChecksumMismatchError, ConfigError, NotFoundError, StoreError
from shardflow.manifests import sha256_file
from shardflow.objectstore.base import ObjectStore
from shardflow.objectstore.local import LocalObjectStore, open_local_store
from tests.contract.objectstore_cases import (
    STORE_CASES,
    StoreCase,
    StoreHarness,
    create_only_writer,
    writer_payload,
)


@pytest.fixture(params=[pytest.param(c, id=c.id, marks=c.marks) for c in STORE_CASES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> StoreHarness:
    case: StoreCase = request.param
    return case.make(tmp_path, request)


@pytest.fixture
def store(harness: StoreHarness) -> ObjectStore:
    return harness.store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_adapter_satisfies_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


def test_put_then_get_round_trips_with_checksum(store: ObjectStore) -> None:
    data = b"\x00binary\xffdata\n" * 100
    result = store.put_bytes("jobs/j1/results/t1/0001.parquet", data)
    assert (result.key, result.size, result.sha256, result.created) == (
        "jobs/j1/results/t1/0001.parquet",
        len(data),
        sha(data),
        True,
    )
    assert store.get_bytes("jobs/j1/results/t1/0001.parquet", expected_sha256=sha(data)) == data


def test_put_file_and_get_file_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    src, dest = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(b"abc" * 1000)
    result = store.put_file("a/b.bin", src)
    assert (result.size, result.sha256) == (3000, sha(b"abc" * 1000))
    store.get_file("a/b.bin", dest, expected_sha256=result.sha256)
    assert dest.read_bytes() == b"abc" * 1000


def test_a_put_made_not_durable_yet_is_visible_at_once_and_kept_by_sync(
    store: ObjectStore,
) -> None:
    keys = [f"jobs/j1/results/t{n:06d}/0001.arrow" for n in range(8)]
    for n, key in enumerate(keys):
        assert store.put_bytes(key, b"r%d" % n, durable=False).created
    marker = store.put_bytes("jobs/j1/results/t000000.done", b"m", create_only=True, durable=False)
    assert marker.created
    again = store.put_bytes("jobs/j1/results/t000000.done", b"x", create_only=True, durable=False)
    assert not again.created
    assert [store.get_bytes(k) for k in keys] == [b"r%d" % n for n in range(8)]
    store.sync()
    store.sync()  # nothing left to flush: a no-op
    assert store.get_bytes("jobs/j1/results/t000000.done") == b"m"


def test_put_file_can_take_a_known_digest_and_move_the_file(
    store: ObjectStore, tmp_path: Path
) -> None:
    src = tmp_path / "out.parquet"
    src.write_bytes(b"PAR1" * 500)
    put = store.put_file(
        "jobs/j1/output/results.parquet", src, sha256=sha(b"PAR1" * 500), move=True
    )
    assert (put.size, put.sha256) == (2000, sha(b"PAR1" * 500))
    assert not src.exists()  # given up to the store
    assert store.get_bytes(put.key, expected_sha256=put.sha256) == b"PAR1" * 500
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"k")
    store.put_file("jobs/j1/output/kept.bin", kept)
    assert kept.exists()


def test_empty_object_round_trips(store: ObjectStore) -> None:
    assert store.put_bytes("jobs/j1/output/_SUCCESS", b"").size == 0
    assert store.get_bytes("jobs/j1/output/_SUCCESS", expected_sha256=sha(b"")) == b""


def test_plain_put_overwrites(store: ObjectStore) -> None:
    store.put_bytes("k", b"old")
    assert store.put_bytes("k", b"new").created is True
    assert store.get_bytes("k") == b"new"


def test_create_only_refuses_existing_and_keeps_it(store: ObjectStore) -> None:
    assert store.put_bytes("t.done", b"winner", create_only=True).created is True
    lost = store.put_bytes("t.done", b"loser!", create_only=True)
    assert lost.created is False
    assert store.get_bytes("t.done") == b"winner"


def test_create_only_put_file_refuses_existing(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"second")
    store.put_bytes("x/y", b"first", create_only=True)
    assert store.put_file("x/y", src, create_only=True).created is False
    assert store.get_bytes("x/y") == b"first"


def test_missing_objects_raise_not_found(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        store.get_bytes("nope")
    with pytest.raises(NotFoundError):
        store.get_file("nope", tmp_path / "d")
    with pytest.raises(NotFoundError):
        store.get_range("nope", 0, 1)
    with pytest.raises(NotFoundError):
        store.copy("nope", "dst")
    assert store.head("nope") is None
    assert not (tmp_path / "d").exists()


def test_head_reports_size_and_known_checksum(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"12345")
    info = store.head("a/b")
    assert info is not None
    assert (info.key, info.size) == ("a/b", 5)
    assert info.sha256 in (None, sha(b"12345"))
    assert info.modified > 0


def test_a_folder_is_not_an_object(store: ObjectStore) -> None:
    store.put_bytes("a/b/c", b"x")
    assert store.head("a/b") is None
    with pytest.raises(NotFoundError):
        store.get_bytes("a/b")


def test_key_below_an_object_is_missing(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"x")
    assert store.head("a/b/c") is None
    with pytest.raises(NotFoundError):
        store.get_bytes("a/b/c")
    store.delete("a/b/c")
    assert list(store.list("a/b/")) == []
    assert store.get_bytes("a/b") == b"x"


def test_list_yields_keys_under_prefix_in_key_order(store: ObjectStore) -> None:
    keys = ["p/a/b", "p/a-c", "p/a/c/d", "p/ab", "p/a.x", "q/x", "pz"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert [i.key for i in store.list("p/")] == sorted(k for k in keys if k.startswith("p/"))
    assert [i.key for i in store.list("p/a")] == sorted(k for k in keys if k.startswith("p/a"))
    assert [i.key for i in store.list("")] == sorted(keys)
    assert [i.key for i in store.list("p/a/c/")] == ["p/a/c/d"]
    assert list(store.list("none/")) == []
    assert {i.key: i.size for i in store.list("q/")} == {"q/x": 3}


def test_delete_removes_and_tolerates_missing(store: ObjectStore) -> None:
    store.put_bytes("a/b", b"x")
    store.delete("a/b")
    store.delete("a/b")
    assert store.head("a/b") is None
    assert list(store.list("")) == []


def test_delete_prefix_counts_and_spares_others(store: ObjectStore) -> None:
    for key in ["jobs/j1/a", "jobs/j1/b/c", "jobs/j10/a", "jobs/j2/a"]:
        store.put_bytes(key, b"x")
    assert store.delete_prefix("jobs/j1/") == 2
    assert [i.key for i in store.list("")] == ["jobs/j10/a", "jobs/j2/a"]
    assert store.delete_prefix("jobs/j1/") == 0
    store.put_bytes("jobs/j1/again", b"y")  # a writer can reuse a pruned folder
    assert store.get_bytes("jobs/j1/again") == b"y"


def test_copy_is_independent_of_later_source_writes(store: ObjectStore) -> None:
    store.put_bytes("src", b"original")
    store.put_bytes("dst", b"to be replaced")
    result = store.copy("src", "dst")
    assert (result.key, result.size, result.sha256) == ("dst", 8, sha(b"original"))
    store.put_bytes("src", b"changed")
    assert store.get_bytes("dst") == b"original"
    store.delete("src")
    assert store.get_bytes("dst", expected_sha256=sha(b"original")) == b"original"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [(0, 4, b"0123"), (3, 7, b"3456"), (8, 100, b"89"), (10, 20, b""), (5, 5, b"")],
)
def test_get_range_returns_half_open_slice(
    store: ObjectStore, start: int, end: int, expected: bytes
) -> None:
    store.put_bytes("r", b"0123456789")
    assert store.get_range("r", start, end) == expected


def test_get_range_refuses_inverted_range(store: ObjectStore) -> None:
    store.put_bytes("r", b"0123456789")
    with pytest.raises(ValueError):
        store.get_range("r", 5, 2)


def test_corrupted_object_fails_checksum_on_read(harness: StoreHarness, tmp_path: Path) -> None:
    store = harness.store
    good = store.put_bytes("jobs/j1/results/t1.done", b"the real marker").sha256
    harness.corrupt("jobs/j1/results/t1.done", b"the torn marker")
    with pytest.raises(ChecksumMismatchError) as excinfo:
        store.get_bytes("jobs/j1/results/t1.done", expected_sha256=good)
    message = str(excinfo.value)
    assert "jobs/j1/results/t1.done" in message
    assert good in message
    assert sha(b"the torn marker") in message
    dest = tmp_path / "kept"
    dest.write_bytes(b"previous")
    with pytest.raises(ChecksumMismatchError):
        store.get_file("jobs/j1/results/t1.done", dest, expected_sha256=good)
    assert dest.read_bytes() == b"previous"
    assert store.get_bytes("jobs/j1/results/t1.done") == b"the torn marker"


BAD_KEYS = ["", "/abs", "a/../b", "..", "a//b", "a/", "a\\b", "./a", ".tmp/x", "a\x00b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_refused(store: ObjectStore, key: str, tmp_path: Path) -> None:
    store.put_bytes("ok", b"x")
    (tmp_path / "any").write_bytes(b"x")
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_file(key, tmp_path / "any"),
        lambda: store.get_bytes(key),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.copy("ok", key),
        lambda: store.uri(key),
    ):
        with pytest.raises(ValueError):
            call()
    assert [i.key for i in store.list("")] == ["ok"]


@pytest.mark.parametrize("prefix", ["../", "/abs/", "a//", "a\\b/"])
def test_unsafe_prefixes_are_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        list(store.list(prefix))
    with pytest.raises(ValueError):
        store.delete_prefix(prefix)


def test_uri_names_the_store(store: ObjectStore) -> None:
    scheme = store.url.split("://", 1)[0]
    assert store.uri("jobs/j1/output/part.parquet").startswith(f"{scheme}://")
    assert store.uri("jobs/j1/output/part.parquet").endswith("/jobs/j1/output/part.parquet")


def test_50_mb_file_streams_without_loading_into_memory(
    harness: StoreHarness, tmp_path: Path
) -> None:
    store, src, dest = harness.store, tmp_path / "big.bin", tmp_path / "back.bin"
    block = os.urandom(1 << 20)
    with src.open("wb") as f:
        for i in range(50):
            f.write(i.to_bytes(4, "big") + block[4:])
    tracemalloc.start()
    try:
        result = store.put_file("big/file.bin", src)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        store.get_file("big/file.bin", dest, expected_sha256=result.sha256)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == 50 << 20
    assert result.sha256 == sha256_file(src) == sha256_file(dest)
    if harness.max_stream_memory is not None:
        assert put_peak < harness.max_stream_memory
        assert get_peak < harness.max_stream_memory


@pytest.mark.requires("shared")
def test_concurrent_create_only_puts_have_one_whole_winner(harness: StoreHarness) -> None:
    assert harness.opener is not None
    writers, key = 8, "jobs/j1/results/t-race.done"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(writers, timeout=60), ctx.Queue()
    procs = [
        ctx.Process(target=create_only_writer, args=(harness.opener, barrier, results, key, i))
        for i in range(writers)
    ]
    for proc in procs:
        proc.start()
    outcomes: list[tuple[int, bool, str]] = []
    deadline = time.monotonic() + 120
    while len(outcomes) < writers:
        try:
            outcomes.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except stdlib_queue.Empty:
            pytest.fail(f"writers stalled after {len(outcomes)} results")
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    winners = [index for index, created, _ in outcomes if created]
    assert len(winners) == 1
    assert harness.store.get_bytes(key) == writer_payload(winners[0])


# --- the embedded adapter beyond the shared contract ---------------------------------------


def test_symlink_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    store = LocalObjectStore(tmp_path / "store")
    (store.root / "jobs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError):
        store.get_bytes("jobs/secret")
    with pytest.raises(ValueError):
        store.put_bytes("jobs/new", b"x")
    assert list(store.list("")) == []
    assert list(store.list("jobs/")) == []
    assert not (outside / "new").exists()


def test_a_key_cannot_be_both_object_and_folder(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("a/b", b"x")
    store.put_bytes("c/d/e", b"y")
    for key, create_only in [("a/b/c", False), ("c/d", True), ("c/d", False)]:
        with pytest.raises(StoreError, match="taken"):
            store.put_bytes(key, b"z", create_only=create_only)
    assert [i.key for i in store.list("")] == ["a/b", "c/d/e"]
    assert list((store.root / ".tmp").iterdir()) == []


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("a", b"1", create_only=True)
    store.put_bytes("a", b"2", create_only=True)
    store.put_bytes("b", b"3")
    store.copy("a", "c")
    with pytest.raises(FileNotFoundError):
        store.put_file("d", tmp_path / "missing")
    assert list((store.root / ".tmp").iterdir()) == []
    assert [i.key for i in store.list("")] == ["a", "b", "c"]


def test_sweep_temp_removes_only_old_orphans(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    old, fresh = store.root / ".tmp" / "old.part", store.root / ".tmp" / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (1_000.0, 1_000.0))
    os.utime(fresh, (5_000.0, 5_000.0))
    assert store.sweep_temp(older_than=3_600, now=5_100.0) == 1
    assert not old.exists()
    assert fresh.exists()


def test_delete_prefix_prunes_empty_folders(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("jobs/j1/results/t1/0001.parquet", b"x")
    store.put_bytes("jobs/j2/job.json", b"{}")
    store.delete_prefix("jobs/j1/")
    assert sorted(p.name for p in (store.root / "jobs").iterdir()) == ["j2"]


def test_local_path_and_uri_point_at_the_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("a b/c.txt", b"hi")
    path = store.local_path("a b/c.txt")
    assert path is not None
    assert path.read_bytes() == b"hi"
    assert store.local_path("missing") is None
    assert store.uri("a b/c.txt") == path.as_uri()
    assert store.url == (tmp_path / "store").resolve().as_uri()


def test_open_local_store_accepts_file_url_and_path(tmp_path: Path) -> None:
    store = open_local_store(str(tmp_path / "s p"))
    store.put_bytes("k", b"v")
    assert open_local_store(store.url).get_bytes("k") == b"v"


@pytest.mark.parametrize("url", ["", "s3://bucket/prefix", "file://host/share"])
def test_open_local_store_refuses_other_locations(url: str) -> None:
    with pytest.raises(ConfigError):
        open_local_store(url)
