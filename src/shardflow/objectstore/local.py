"""The embedded object store: a local directory (``.shardflow/store`` by default).

A write streams into ``root/.tmp/`` while hashing, ``fsync``s the file, then publishes it
in one step: ``os.link`` for create-only (the kernel refuses an existing name, so of N
racing writers exactly one wins and the object is whole), ``os.replace`` to overwrite.
The parent directory (and a folder the write created, in its own parent) is ``fsync``ed so
a published object survives a crash. Objects are never modified in place, which is what
lets :meth:`LocalObjectStore.copy` hard-link.

A put with ``durable=False`` skips those flushes and remembers what it wrote;
:meth:`LocalObjectStore.sync` then makes all of it durable at once: one ``syncfs`` of the
store's filesystem for many objects (a commit group), or an ``fsync`` of each file and
folder for a few. Per object that costs a fraction of the four flushes it replaces.

``validate_key`` and ``validate_prefix`` are shared with :mod:`.memory`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import itertools
import os
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from shardflow.errors import ChecksumMismatchError, ConfigError, NotFoundError, StoreError
from shardflow.objectstore.base import (
    TMP_DIR,
    ObjectInfo,
    PutResult,
    validate_key,
    validate_prefix,
)
from shardflow.objectstore.files import (
    SYNCFS_FROM,
    copy_hashing,
    fsync_dir,
    fsync_path,
    hash_file,
    read_all,
    read_chunks,
    remove_older,
    syncfs,
    unlink_quietly,
    walk_objects,
)

_REAL_DIRS_MAX = 65536  # folders remembered as free of links (forgotten all at once)
_PUBLISH_TRIES = 5
_NO_LINK = frozenset({errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})

__all__ = ["TMP_DIR", "LocalObjectStore", "open_local_store"]


class LocalObjectStore:
    """An :class:`~shardflow.objectstore.base.ObjectStore` in the directory ``root``
    (created if missing). Safe for concurrent use by threads and processes."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()
        self._root_str = str(self._root)
        self._url = self._root.as_uri()
        self._root_sep = self._root_str.rstrip(os.sep) + os.sep
        self._real_dirs: set[str] = {self._root_str}
        self._unsynced: set[str] = set()
        self._unsynced_lock = threading.Lock()
        self._tmp = self._root / TMP_DIR
        self._tmp_sep = f"{self._tmp}/"
        self._tag = (-1, "")
        self._count = itertools.count()
        self._tmp.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    @property
    def url(self) -> str:
        return self._url

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        """The file of ``key``, refused if it would lead out of the store.

        A symlink planted inside the store must not lead a key outside it. The folders
        above an object are resolved once and remembered while they were real folders
        (resolving every call cost a quarter of a 10,000-output aggregation); the
        object's own name costs one lstat, and a link there is resolved in full. Plain
        strings, not pathlib: this runs several times for every object a task writes.
        """
        path = self._root_sep + validate_key(key)
        parent = path.rpartition("/")[0]
        if parent not in self._real_dirs:
            self._check_folders(key, parent)
        if os.path.islink(path):
            resolved = os.path.realpath(path)
            if not resolved.startswith(self._root_sep):
                raise ValueError(f"invalid object key {key!r}: leaves {self._root}")
        return path

    def _check_folders(self, key: str, parent: str) -> None:
        """Refuse ``key`` if a folder on its way is a link out of the store. Walking up to a
        folder already known to be free of links costs one lstat per level (usually one:
        a task's new folder); a link on the way is resolved in full."""
        level, seen = parent, []
        while level not in self._real_dirs:
            if os.path.islink(level) or not level.startswith(self._root_sep):
                resolved = os.path.realpath(parent)
                if resolved != self._root_str and not resolved.startswith(self._root_sep):
                    raise ValueError(f"invalid object key {key!r}: leaves {self._root}")
                return  # inside the store after all, but not free of links: not remembered
            seen.append(level)
            level = os.path.dirname(level)
        for folder in seen:
            if os.path.isdir(folder):  # a folder not made yet is looked at again next time
                self._remember_real(folder)

    def _remember_real(self, folder: str) -> None:
        if len(self._real_dirs) >= _REAL_DIRS_MAX:
            self._real_dirs.clear()
            self._real_dirs.add(self._root_str)
        self._real_dirs.add(folder)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"object {key!r} not found in {self.url}")
        return path

    def _temp_path(self) -> str:
        """A new name in the temp area: this process's id and a random tag (drawn again
        after a fork), then a counter."""
        if self._tag[0] != os.getpid():
            self._tag = (os.getpid(), f"{os.getpid()}-{secrets.token_hex(6)}")
        return f"{self._tmp_sep}{self._tag[1]}-{next(self._count)}.part"

    def _write_temp(self, chunks: Iterable[bytes], *, fsync: bool) -> tuple[str, int, str]:
        """Write ``chunks`` to a new temp file: its name, size and SHA-256."""
        tmp = self._temp_path()
        try:
            size, sha = copy_hashing(chunks, tmp, fsync=fsync)
        except FileNotFoundError:
            if os.path.isdir(self._tmp):
                raise  # the source is what is missing
            # the temp area itself was removed (a purge): it is made again, and the write
            # starts over (it failed opening the file, before taking any chunk)
            self._tmp.mkdir(exist_ok=True)
            size, sha = copy_hashing(chunks, tmp, fsync=fsync)
        return tmp, size, sha

    def _publish(
        self, tmp: str, key: str, *, create_only: bool, durable: bool = True, final: str = ""
    ) -> bool:
        final = final or self._file(key)
        folder = final.rpartition("/")[0]
        try:
            for attempt in range(_PUBLISH_TRIES):
                new_dirs: list[str] = []
                try:
                    # a folder known to exist is not looked at again (unless a retry asks)
                    if (attempt or folder not in self._real_dirs) and not os.path.isdir(folder):
                        new_dirs = self._make_dirs(folder)
                except (FileExistsError, NotADirectoryError) as exc:
                    raise self._clash(key) from exc
                try:
                    created = self._link_or_replace(tmp, final, create_only=create_only)
                except FileNotFoundError:
                    continue  # delete_prefix pruned the parent directory just now
                except IsADirectoryError as exc:
                    raise self._clash(key) from exc
                if not created and os.path.isdir(final):
                    raise self._clash(key)
                # the object's folder holds its name; each new folder's parent holds its
                flush = [folder, *(d.rpartition("/")[0] for d in new_dirs)]
                if durable:
                    for name in flush:
                        fsync_dir(name)
                elif created:
                    with self._unsynced_lock:
                        self._unsynced.update([final, *flush])
                return created
            raise StoreError(f"{self.url}: could not publish {key!r}: its folder keeps vanishing")
        finally:
            unlink_quietly(tmp)

    def _clash(self, key: str) -> StoreError:
        # A directory can't also be a file: S3 allows keys "a/b" and "a/b/c", we cannot.
        return StoreError(f"{self.url}: cannot write {key!r}: it or a folder above it is taken")

    def _make_dirs(self, folder: str) -> list[str]:
        """Create ``folder`` and missing folders above it; return those made, top first."""
        missing: list[str] = []
        here = folder
        while here != self._root_str and not os.path.isdir(here):
            missing.append(here)
            here = here.rpartition("/")[0]
        made = []
        for path in reversed(missing):
            try:
                os.mkdir(path)
                made.append(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise
        return made

    def sync(self) -> None:
        """Make every put made with ``durable=False`` durable: one ``syncfs`` for many
        paths, else an ``fsync`` of each file and folder."""
        with self._unsynced_lock:
            paths, self._unsynced = self._unsynced, set()
        if not paths:
            return
        if len(paths) >= SYNCFS_FROM and syncfs(self._root):
            return
        for path in sorted(paths, key=len, reverse=True):
            fsync_path(path)

    def _link_or_replace(self, tmp: str, final: str, *, create_only: bool) -> bool:
        if not create_only:
            os.replace(tmp, final)
            return True
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in _NO_LINK:
                raise StoreError(
                    f"{self.url}: the filesystem refuses hard links, which create-only "
                    "writes need; put the store on a local POSIX filesystem"
                ) from exc
            raise
        return True

    def _put_chunks(
        self, key: str, chunks: Iterable[bytes], *, create_only: bool, durable: bool
    ) -> PutResult:
        final = self._file(key)
        tmp, size, sha = self._write_temp(chunks, fsync=durable)
        created = self._publish(tmp, key, create_only=create_only, durable=durable, final=final)
        return PutResult(key=key, size=size, sha256=sha, created=created)

    def put_bytes(
        self, key: str, data: bytes, *, create_only: bool = False, durable: bool = True
    ) -> PutResult:
        """Write ``data`` at ``key`` atomically.

        With ``create_only`` an existing object is left untouched and the result has
        ``created=False``; ``size`` and ``sha256`` then describe the refused payload.
        With ``durable=False`` the object is durable after the next :meth:`sync`.
        """
        return self._put_chunks(key, (data,), create_only=create_only, durable=durable)

    def put_file(
        self,
        key: str,
        path: Path,
        *,
        create_only: bool = False,
        durable: bool = True,
        sha256: str | None = None,
        move: bool = False,
    ) -> PutResult:
        """Stream the file ``path`` to ``key``; as :meth:`put_bytes` otherwise. With
        ``move`` (and the file on the store's filesystem) the file itself is moved into
        place; its digest is ``sha256`` if given, else read from it."""
        path = Path(path)
        if move:
            self._path(key)
            self._tmp.mkdir(exist_ok=True)
            tmp = self._temp_path()
            try:
                os.rename(path, tmp)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            else:
                size, sha = (os.stat(tmp).st_size, sha256) if sha256 else hash_file(tmp)
                if durable:
                    fsync_path(tmp)
                created = self._publish(tmp, key, create_only=create_only, durable=durable)
                return PutResult(key=key, size=size, sha256=sha, created=created)
        put = self._put_chunks(key, read_chunks(path), create_only=create_only, durable=durable)
        if move:
            path.unlink()
        return put

    def get_bytes(self, key: str, *, expected_sha256: str | None = None) -> bytes:
        """The object's bytes. Raises NotFoundError, or ChecksumMismatchError when
        ``expected_sha256`` is given and differs."""
        try:
            fd = os.open(self._file(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(f"object {key!r} not found in {self.url}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotFoundError(f"object {key!r} not found in {self.url}")
            data = read_all(fd, st.st_size)
        finally:
            os.close(fd)
        if expected_sha256 is not None:
            self._verify(key, expected_sha256, hashlib.sha256(data).hexdigest())
        return data

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> None:
        """Stream the object to ``dest`` (replaced atomically). On a checksum mismatch
        ``dest`` is left as it was and ChecksumMismatchError is raised."""
        src = self._existing(key)
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        _size, sha = copy_hashing(read_chunks(src), part)
        try:
            if expected_sha256 is not None:
                self._verify(key, expected_sha256, sha)
            os.replace(part, dest)
        finally:
            unlink_quietly(part)

    def _verify(self, key: str, expected: str, actual: str) -> None:
        if expected.lower() != actual:
            raise ChecksumMismatchError(
                f"object {key!r} in {self.url}: expected sha256 {expected}, got {actual}"
            )

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer at its end); ValueError if
        ``start < 0`` or ``end < start``."""
        if start < 0 or end < start:
            raise ValueError(f"invalid range [{start}, {end})")
        with self._existing(key).open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def head(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or None; ``sha256`` is not known here (None)."""
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, read lazily.

        Symlinks and the temp area are skipped.
        """
        validate_prefix(prefix)
        head, _, start = prefix.rpartition("/")
        base = self._root.joinpath(*head.split("/")) if head else self._root
        if base != self._root and self._root not in base.resolve().parents:
            return  # the prefix runs through a symlink out of the store
        yield from walk_objects(base, head + "/" if head else "", start, skip=self._tmp)

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many were deleted.

        Directories left empty are removed too (a writer racing with this recreates them).
        """
        count = 0
        parents: set[Path] = set()
        for info in builtins.list(self.list(prefix)):
            path = self._path(info.key)
            try:
                path.unlink()
                count += 1
            except FileNotFoundError:
                continue
            parents.update(p for p in path.parents if self._root in p.parents)
        for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
        return count

    def copy(self, src: str, dst: str) -> PutResult:
        """Copy ``src`` to ``dst`` (overwriting it), atomically visible at ``dst``.

        Hard-links when the filesystem allows (objects are never changed in place, so
        sharing the inode is safe), else copies the bytes. Raises NotFoundError.
        """
        src_path = self._existing(src)
        self._path(dst)
        self._tmp.mkdir(exist_ok=True)
        tmp = self._temp_path()
        try:
            os.link(src_path, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            size, sha = copy_hashing(read_chunks(src_path), tmp)
        else:
            size, sha = hash_file(tmp)
        self._publish(tmp, dst, create_only=False)
        return PutResult(key=dst, size=size, sha256=sha, created=True)

    def local_path(self, key: str) -> Path | None:
        """The file holding the object, or None when the key does not exist."""
        path = self._path(key)
        return path if path.is_file() else None

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def sweep_temp(self, older_than: float, now: float) -> int:
        """Remove temp files of writes that died, last modified more than ``older_than``
        seconds before ``now``; return how many were removed."""
        return remove_older(self._tmp, now - older_than)


def open_local_store(url_or_path: str) -> LocalObjectStore:
    """A :class:`LocalObjectStore` at ``file:///abs/path`` or a plain path.

    Raises :class:`ConfigError` for another scheme or a ``file://`` URL naming a host.
    """
    if "://" not in url_or_path:
        if not url_or_path:
            raise ConfigError("an empty storage path")
        return LocalObjectStore(Path(url_or_path))
    parsed = urlparse(url_or_path)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise ConfigError(
            f"not a local storage location: {url_or_path!r} (use file:///abs/path or a path)"
        )
    return LocalObjectStore(Path(url2pathname(parsed.path)))
