"""File primitives of the local object store: writing while hashing, flushing, reading.

Plain ``os`` calls on string paths: these run for every object a task writes, where
pathlib's objects cost more than the system calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from shardflow.objectstore.base import ObjectInfo

CHUNK = 1 << 20


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: str | Path) -> None:
    # Only for our own temp files: after a publish (link) or a failure they must go.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def copy_hashing(
    src: Iterable[bytes], dest: str | Path, *, mode: int = 0o666, fsync: bool = True
) -> tuple[int, str]:
    """Write ``src`` into a new file ``dest`` (which must not exist), fsync it (unless
    ``fsync`` is false), and return its size and SHA-256. On error ``dest`` is removed."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        for chunk in src:
            digest.update(chunk)
            view = memoryview(chunk)
            size += len(view)
            while view:
                view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(dest)
        raise
    os.close(fd)
    return size, digest.hexdigest()


def syncfs(path: Path) -> bool:
    """``syncfs(2)`` of the filesystem holding ``path``; False where there is none."""
    import ctypes

    fn = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if fn is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if fn(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs {path}")
    finally:
        os.close(fd)
    return True


def fsync_path(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # deleted since it was written: nothing of it to keep
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: unsynced paths from which :meth:`LocalObjectStore.sync` uses one ``syncfs`` instead
SYNCFS_FROM = 6


def read_all(fd: int, size: int) -> bytes:
    """The file's bytes, to its end (it may have changed size since ``size`` was read)."""
    chunks = []
    want = size + 1  # one read for a file that did not grow
    while chunk := os.read(fd, want):
        chunks.append(chunk)
        want = CHUNK
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_chunks(path: str | Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def hash_file(path: str | Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in read_chunks(path):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def walk_objects(
    directory: Path, key_prefix: str, name_start: str, *, skip: Path
) -> Iterator[ObjectInfo]:
    """Every file under ``directory`` whose name starts with ``name_start``, as objects
    keyed ``key_prefix + path``, in key order; symlinks and the folder ``skip`` left out."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    # Sorting directories as "name/" gives the exact string order of the keys below.
    found: list[tuple[str, os.DirEntry[str], bool]] = []
    for entry in entries:
        if not entry.name.startswith(name_start) or entry.is_symlink():
            continue
        if entry.path == str(skip):
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        found.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
    found.sort(key=lambda item: item[0])
    for sort_name, entry, is_dir in found:
        if is_dir:
            yield from walk_objects(Path(entry.path), key_prefix + sort_name, "", skip=skip)
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted while listing
        yield ObjectInfo(key=key_prefix + entry.name, size=st.st_size, modified=st.st_mtime)


def remove_older(folder: Path, before: float) -> int:
    """Remove the files in ``folder`` last modified before ``before``; how many were."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and (
                entry.stat(follow_symlinks=False).st_mtime < before
            ):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # another sweeper got it
    return removed
