"""Ids and paths are validated before use: traversal attempts are refused before any key
or path is built, and symlinks planted in the store or in scratch are not followed."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardflow.cli.limit import limit
from shardflow.cli.main import cli
from shardflow.errors import InvalidIdError
from shardflow.layout import Layout, LocalPaths, validate_id
from shardflow.objectstore.base import validate_key
from shardflow.objectstore.local import LocalObjectStore
from shardflow.objectstore.memory import MemoryObjectStore
from shardflow.statestore.sqlite import SqliteStateStore

BAD_IDS = ["../x", "a/b", "A", "x" * 64, ".", "..", "", "a\x00b", "-x", "x.y", "a\\b", " x"]
BAD_KEYS = ["../x", "a/../b", "/etc/passwd", "a//b", "a/./b", "a\\b", "a\x00b", ".tmp/x", ".", ""]


@pytest.mark.parametrize("value", BAD_IDS)
def test_malformed_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidIdError):
        validate_id(value)


@pytest.mark.parametrize("value", ["a", "0", "x" * 63, "enrich-20260425-120000-ab12", "t_01"])
def test_well_formed_ids_pass(value: str) -> None:
    assert validate_id(value) == value


@pytest.mark.parametrize("value", ["../x", "a/b", "A", "x" * 64, "."])
def test_layout_refuses_malformed_ids_in_every_key(value: str) -> None:
    with pytest.raises(InvalidIdError):
        Layout(value)
    layout = Layout("job1")
    for build in (
        lambda: layout.task_part(value),
        lambda: layout.result(value, 1),
        lambda: layout.marker(value),
        lambda: layout.task_log(value, 1),
        lambda: layout.batch(value, "jsonl"),
    ):
        with pytest.raises(InvalidIdError):
            build()


@pytest.mark.parametrize("value", ["../x", "a/b", ".", "..", "x/../../y", ""])
def test_layout_refuses_traversing_object_names(value: str) -> None:
    layout = Layout("job1")
    with pytest.raises(InvalidIdError):
        layout.batch("b000001", value)
    with pytest.raises(InvalidIdError):
        layout.output(value, "parquet")


@pytest.mark.parametrize("value", ["../x", "a/b", "A", "x" * 64, "."])
def test_local_paths_refuse_malformed_ids(tmp_path: Path, value: str) -> None:
    paths = LocalPaths(tmp_path / "ws", tmp_path / "scratch")
    for build in (
        lambda: paths.checkpoint_dir(value, "t000001"),
        lambda: paths.checkpoint_dir("job1", value),
        lambda: paths.log_file(value, "t000001", 1),
        lambda: paths.log_file("job1", value, 1),
        lambda: paths.job_log_dir(value),
    ):
        with pytest.raises(InvalidIdError):
            build()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_object_stores_refuse_traversing_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)
    local = LocalObjectStore(tmp_path / "store")
    for store in (local, MemoryObjectStore()):
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")
        with pytest.raises(ValueError):
            store.get_bytes(key)
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "b").exists()


def test_a_symlink_planted_in_the_store_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private", encoding="utf-8")
    store = LocalObjectStore(tmp_path / "store")
    os.symlink(outside, store.root / "jobs")
    with pytest.raises(ValueError):
        store.put_bytes("jobs/new.json", b"{}")
    with pytest.raises(ValueError):
        store.get_bytes("jobs/secret.txt")
    assert list(store.list("jobs/")) == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_symlink_planted_as_an_object_in_a_folder_already_used_is_not_followed(
    tmp_path: Path,
) -> None:
    # folders above objects are checked once and remembered: the object's own name is
    # still checked on every call
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private", encoding="utf-8")
    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("jobs/j1/a.json", b"{}")
    assert store.get_bytes("jobs/j1/a.json") == b"{}"
    os.symlink(outside / "secret.txt", store.root / "jobs" / "j1" / "b.json")
    with pytest.raises(ValueError):
        store.get_bytes("jobs/j1/b.json")
    with pytest.raises(ValueError):
        store.put_bytes("jobs/j1/b.json", b"{}")
    assert (outside / "secret.txt").read_text(encoding="utf-8") == "private"


@pytest.mark.parametrize("depth", ["job", "task"])
def test_a_symlink_planted_in_scratch_is_not_followed(tmp_path: Path, depth: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    scratch = tmp_path / "scratch"
    if depth == "job":
        scratch.mkdir()
        os.symlink(outside, scratch / "job1")
    else:
        (scratch / "job1").mkdir(parents=True)
        os.symlink(outside, scratch / "job1" / "t000001")
    paths = LocalPaths(tmp_path / "ws", scratch)
    with pytest.raises(InvalidIdError, match="leaves"):
        paths.checkpoint_dir("job1", "t000001")


def test_a_symlink_planted_as_an_attempt_folder_is_not_followed(tmp_path: Path) -> None:
    from shardflow.worker.checkpoint import Checkpoint

    outside = tmp_path / "outside"
    outside.mkdir()
    task_dir = tmp_path / "scratch" / "job1" / "t000001"
    task_dir.mkdir(parents=True)
    os.symlink(outside, task_dir / "a0001")
    paths = LocalPaths(tmp_path / "ws", tmp_path / "scratch")
    # refusing (an error) is fine; writing through the link is not
    with contextlib.suppress(InvalidIdError, OSError):
        Checkpoint(paths.checkpoint_dir("job1", "t000001"), 1).close()
    assert list(outside.iterdir()) == []


def test_a_symlinked_log_file_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    logs = tmp_path / "ws" / "logs" / "job1"
    logs.mkdir(parents=True)
    os.symlink(victim, logs / "t000001.0001.log")
    paths = LocalPaths(tmp_path / "ws", tmp_path / "scratch")
    with pytest.raises(InvalidIdError):
        paths.log_file("job1", "t000001", 1)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with an (empty) state store, as after `shardflow run`."""
    (tmp_path / ".shardflow").mkdir()
    SqliteStateStore(tmp_path / ".shardflow" / "state.db").close()
    (tmp_path / "h.py").write_text("def f(r, c):\n    return r\n", encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n', encoding="utf-8")
    (tmp_path / "job.yaml").write_text(
        "name: x\nhandler: h.py:f\ninput: {path: in.jsonl}\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


COMMANDS = [
    ["pause", "{id}"],
    ["resume", "{id}"],
    ["cancel", "{id}"],
    ["retry", "{id}"],
    ["purge", "{id}", "--yes"],
    ["recover", "{id}"],
    ["status", "{id}"],
    ["logs", "{id}"],
]


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize("bad", ["../x", "a/b", "A", "x" * 64, "."])
def test_job_id_arguments_are_usage_errors(bad: str) -> None:
    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(cli, [part.format(id=bad) for part in command])
        assert result.exit_code == 2, (command, result.output)
        assert "invalid job id" in result.output
    for args in (["set", bad, "geo", "5/s"], ["show", bad]):
        assert runner.invoke(limit, args).exit_code == 2


GAPS = (
    "gap in shardflow/cli/run.py (_submit catches only UsageError and InputError) and "
    "shardflow/cli/status.py (`logs` calls validate_id on the task id unguarded): the id is "
    "refused before any key is built, but with a traceback and exit code 1"
)


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize("bad", ["../x", "A"])
def test_job_and_task_id_options_are_usage_errors(bad: str) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["submit", "job.yaml", "--job-id", "ok1"]).exit_code == 0
    codes = [
        runner.invoke(cli, ["run", "job.yaml", "--job-id", bad]).exit_code,
        runner.invoke(cli, ["submit", "job.yaml", "--job-id", bad]).exit_code,
        runner.invoke(cli, ["logs", "ok1", bad]).exit_code,
    ]
    assert codes == [2, 2, 2]


def _saved_checkpoint(task_dir: Path, attempt: int = 1) -> None:
    """A checkpoint with one saved chunk (ten items done, one forged row)."""
    from shardflow.worker.checkpoint import Checkpoint

    ckpt = Checkpoint(task_dir, attempt)
    ckpt.save(
        last_ordinal=9,
        rows=[{"value": "forged"}],
        keys=["k0"],
        key_column="_key",
        failures=[],
        succeeded=10,
        failed=0,
        rejected=0,
    )
    ckpt.close()


@pytest.mark.parametrize("planted", ["another-owner", "writable-by-others"])
def test_a_task_folder_planted_in_shared_scratch_is_refused(tmp_path: Path, planted: str) -> None:
    from shardflow.worker.checkpoint import Checkpoint

    scratch = tmp_path / "scratch"
    task_dir = scratch / "job1" / "t000001"
    _saved_checkpoint(task_dir)  # what another user left where attempt 2 will look
    if planted == "another-owner":
        os.chown(task_dir, 65534, 65534)  # nobody (the tests run as root in CI)
    else:
        task_dir.chmod(0o777)
    paths = LocalPaths(tmp_path / "ws", scratch)
    with pytest.raises(InvalidIdError, match="not a folder of this user's alone"):
        Checkpoint(paths.checkpoint_dir("job1", "t000001"), 2)


def test_an_attempt_folder_of_another_owner_is_not_adopted(tmp_path: Path) -> None:
    from shardflow.worker.checkpoint import Checkpoint

    scratch = tmp_path / "scratch"
    task_dir = scratch / "job1" / "t000001"
    _saved_checkpoint(task_dir)
    os.chown(task_dir / "a0001", 65534, 65534)
    ckpt = Checkpoint(LocalPaths(tmp_path / "ws", scratch).checkpoint_dir("job1", "t000001"), 2)
    assert ckpt.progress.last_ordinal == -1  # starts from the first item: nothing forged
    assert ckpt.part_paths() == []
    ckpt.close()


def test_a_checkpoint_written_for_another_task_is_not_adopted(tmp_path: Path) -> None:
    from shardflow.worker.checkpoint import Checkpoint

    scratch = tmp_path / "scratch"
    _saved_checkpoint(scratch / "job2" / "t000009")  # a real checkpoint of another task
    (scratch / "job1" / "t000001").mkdir(parents=True)
    os.rename(scratch / "job2" / "t000009" / "a0001", scratch / "job1" / "t000001" / "a0001")
    ckpt = Checkpoint(LocalPaths(tmp_path / "ws", scratch).checkpoint_dir("job1", "t000001"), 2)
    assert ckpt.progress.last_ordinal == -1  # starts from the first item
    assert ckpt.part_paths() == []
    ckpt.close()
    # the task's own earlier attempt is adopted as before
    _saved_checkpoint(scratch / "job1" / "t000003")
    own = Checkpoint(LocalPaths(tmp_path / "ws", scratch).checkpoint_dir("job1", "t000003"), 2)
    assert own.progress.last_ordinal == 9
    own.close()


def test_checkpoint_folders_are_created_private(tmp_path: Path) -> None:
    task_dir = tmp_path / "scratch" / "job1" / "t000001"
    _saved_checkpoint(task_dir)
    for folder in (task_dir.parent, task_dir, task_dir / "a0001"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
