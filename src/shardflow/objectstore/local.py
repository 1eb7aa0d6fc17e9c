"""The embedded object store: a local directory (``.shardflow/store`` by default).

A write streams into ``root/.tmp/`` while hashing, ``fsync``s the file, then publishes it
in one step: ``os.link`` for create-only (the kernel refuses an existing name, so of N
racing writers exactly one wins and the object is whole), ``os.replace`` to overwrite.
The parent directory is ``fsync``ed so a published object survives a crash. Objects are
never modified in place, which is what lets :meth:`LocalObjectStore.copy` hard-link.

``validate_key`` and ``validate_prefix`` are shared with :mod:`.memory`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from shardflow.errors import ChecksumMismatchError, ConfigError, NotFoundError, StoreError
from shardflow.objectstore.base import ObjectInfo, PutResult

CHUNK = 1 << 20
_REAL_DIRS_MAX = 65536  # folders remembered as free of links (forgotten all at once)
MAX_KEY_BYTES = 1024
TMP_DIR = ".tmp"
_PUBLISH_TRIES = 5
_NO_LINK = frozenset({errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})

__all__ = ["LocalObjectStore", "open_local_store", "validate_key", "validate_prefix"]


def _check_segments(value: str, what: str, segments: builtins.list[str]) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"invalid object {what} {value!r}: empty, '.' or '..' segment")
    if segments and segments[0] == TMP_DIR:
        raise ValueError(f"invalid object {what} {value!r}: {TMP_DIR} is reserved")


def validate_key(key: str) -> str:
    """``key`` if it is a relative POSIX key, else ValueError.

    Refused: empty keys, absolute keys, backslashes, NUL, empty / ``.`` / ``..``
    segments, keys under the reserved ``.tmp/`` and keys over 1024 UTF-8 bytes.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid object key {key!r}: empty")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}: absolute, backslash or NUL")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"invalid object key {key[:40]!r}...: longer than {MAX_KEY_BYTES} bytes")
    _check_segments(key, "key", key.split("/"))
    return key


def validate_prefix(prefix: str) -> str:
    """``prefix`` if it is ``""`` or a valid key, or a valid key followed by ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    # Only for our own temp files: after a publish (link) or a failure they must go.
    path.unlink(missing_ok=True)


def _copy_hashing(src: Iterable[bytes], dest: Path, *, mode: int = 0o666) -> tuple[int, str]:
    """Write ``src`` into a new file ``dest`` (which must not exist), fsync it, and return
    its size and SHA-256. On error ``dest`` is removed."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in src:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        _unlink_quietly(dest)
        raise
    return size, digest.hexdigest()


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class LocalObjectStore:
    """An :class:`~shardflow.objectstore.base.ObjectStore` in the directory ``root``
    (created if missing). Safe for concurrent use by threads and processes."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()
        self._root_str = str(self._root)
        self._root_sep = self._root_str.rstrip(os.sep) + os.sep
        self._real_dirs: set[str] = set()
        self._tmp = self._root / TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    @property
    def url(self) -> str:
        return self._root.as_uri()

    def _path(self, key: str) -> Path:
        path = self._root.joinpath(*validate_key(key).split("/"))
        # A symlink planted inside the store must not lead a key outside it. The folders
        # above an object are resolved once and remembered while they were real folders
        # (resolving every call cost a quarter of a 10,000-output aggregation); the
        # object's own name costs one lstat, and a link there is resolved in full.
        parent = str(path.parent)
        if parent not in self._real_dirs:
            resolved = os.path.realpath(parent)
            if resolved != self._root_str and not resolved.startswith(self._root_sep):
                raise ValueError(f"invalid object key {key!r}: leaves {self._root}")
            if resolved == parent and os.path.isdir(parent):
                if len(self._real_dirs) >= _REAL_DIRS_MAX:
                    self._real_dirs.clear()
                self._real_dirs.add(parent)
        if os.path.islink(path) and self._root not in path.resolve().parents:
            raise ValueError(f"invalid object key {key!r}: leaves {self._root}")
        return path

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise NotFoundError(f"object {key!r} not found in {self.url}")
        return path

    def _temp_path(self) -> Path:
        self._tmp.mkdir(exist_ok=True)
        return self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}.part"

    def _publish(self, tmp: Path, key: str, *, create_only: bool) -> bool:
        final = self._path(key)
        # A directory can't also be a file: S3 allows keys "a/b" and "a/b/c", we cannot.
        clash = StoreError(f"{self.url}: cannot write {key!r}: it or a folder above it is taken")
        try:
            for _ in range(_PUBLISH_TRIES):
                try:
                    final.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError) as exc:
                    raise clash from exc
                try:
                    created = self._link_or_replace(tmp, final, create_only=create_only)
                except FileNotFoundError:
                    continue  # delete_prefix pruned the parent directory just now
                except IsADirectoryError as exc:
                    raise clash from exc
                if not created and final.is_dir():
                    raise clash
                _fsync_dir(final.parent)
                return created
            raise StoreError(f"{self.url}: could not publish {key!r}: its folder keeps vanishing")
        finally:
            _unlink_quietly(tmp)

    def _link_or_replace(self, tmp: Path, final: Path, *, create_only: bool) -> bool:
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

    def _put_chunks(self, key: str, chunks: Iterable[bytes], *, create_only: bool) -> PutResult:
        self._path(key)
        tmp = self._temp_path()
        size, sha = _copy_hashing(chunks, tmp)
        created = self._publish(tmp, key, create_only=create_only)
        return PutResult(key=key, size=size, sha256=sha, created=created)

    def put_bytes(self, key: str, data: bytes, *, create_only: bool = False) -> PutResult:
        """Write ``data`` at ``key`` atomically.

        With ``create_only`` an existing object is left untouched and the result has
        ``created=False``; ``size`` and ``sha256`` then describe the refused payload.
        """
        return self._put_chunks(key, (bytes(data),), create_only=create_only)

    def put_file(self, key: str, path: Path, *, create_only: bool = False) -> PutResult:
        """Stream the file ``path`` to ``key``; as :meth:`put_bytes` otherwise."""
        return self._put_chunks(key, _read_chunks(Path(path)), create_only=create_only)

    def get_bytes(self, key: str, *, expected_sha256: str | None = None) -> bytes:
        """The object's bytes. Raises NotFoundError, or ChecksumMismatchError when
        ``expected_sha256`` is given and differs."""
        data = self._existing(key).read_bytes()
        if expected_sha256 is not None:
            self._verify(key, expected_sha256, hashlib.sha256(data).hexdigest())
        return data

    def get_file(self, key: str, dest: Path, *, expected_sha256: str | None = None) -> None:
        """Stream the object to ``dest`` (replaced atomically). On a checksum mismatch
        ``dest`` is left as it was and ChecksumMismatchError is raised."""
        src = self._existing(key)
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        _size, sha = _copy_hashing(_read_chunks(src), part)
        try:
            if expected_sha256 is not None:
                self._verify(key, expected_sha256, sha)
            os.replace(part, dest)
        finally:
            _unlink_quietly(part)

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
        yield from self._walk(base, head + "/" if head else "", start)

    def _walk(self, directory: Path, key_prefix: str, name_start: str) -> Iterator[ObjectInfo]:
        try:
            entries = builtins.list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sorting directories as "name/" gives the exact string order of the keys below.
        found: builtins.list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            if not entry.name.startswith(name_start) or entry.is_symlink():
                continue
            if directory == self._root and entry.name == TMP_DIR:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            found.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        found.sort(key=lambda item: item[0])
        for sort_name, entry, is_dir in found:
            if is_dir:
                yield from self._walk(Path(entry.path), key_prefix + sort_name, "")
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while listing
            yield ObjectInfo(key=key_prefix + entry.name, size=st.st_size, modified=st.st_mtime)

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
        tmp = self._temp_path()
        try:
            os.link(src_path, tmp)
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            size, sha = _copy_hashing(_read_chunks(src_path), tmp)
        else:
            size, sha = self._hash_file(tmp)
        self._publish(tmp, dst, create_only=False)
        return PutResult(key=dst, size=size, sha256=sha, created=True)

    @staticmethod
    def _hash_file(path: Path) -> tuple[int, str]:
        digest = hashlib.sha256()
        size = 0
        for chunk in _read_chunks(path):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def local_path(self, key: str) -> Path | None:
        """The file holding the object, or None when the key does not exist."""
        path = self._path(key)
        return path if path.is_file() else None

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def sweep_temp(self, older_than: float, now: float) -> int:
        """Remove temp files of writes that died, last modified more than ``older_than``
        seconds before ``now``; return how many were removed."""
        removed = 0
        try:
            entries = builtins.list(os.scandir(self._tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and (
                    entry.stat(follow_symlinks=False).st_mtime < now - older_than
                ):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # another sweeper got it
        return removed


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
