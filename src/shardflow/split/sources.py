"""Where input bytes come from: the :class:`Source` port and its local implementation.

A source is one input file. Local paths and ``file://`` URLs are built in; other schemes
(``s3://``) plug in with :func:`register_scheme`, so this module never imports a cloud SDK.
:func:`expand_inputs` turns the configured paths (globs, lists) into sources, in order.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from shardflow.errors import InputError

_GLOB_CHARS = frozenset("*?[")


@runtime_checkable
class Source(Protocol):
    """One input file, read whole as a stream or by byte ranges."""

    @property
    def url(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def mtime(self) -> float: ...

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (fewer at the end of the file)."""
        ...

    def open(self) -> BinaryIO:
        """A stream of the whole file from its first byte; the caller closes it."""
        ...


SourceFactory = Callable[[str], Source]
SourceExpander = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class _Scheme:
    factory: SourceFactory
    expand: SourceExpander | None


_SCHEMES: dict[str, _Scheme] = {}


def register_scheme(
    scheme: str, factory: SourceFactory, *, expand: SourceExpander | None = None
) -> None:
    """Let URLs of ``scheme`` be inputs: ``factory(url)`` opens one object as a Source.

    ``expand(pattern)`` lists the URLs a glob pattern matches (sorted); without it, globs
    of that scheme are refused. Registering a scheme again replaces it.
    """
    _SCHEMES[scheme.lower()] = _Scheme(factory, expand)


@dataclass(frozen=True)
class LocalSource:
    """A file on a local (or shared) filesystem."""

    path: Path
    size: int
    mtime: float

    @classmethod
    def from_path(cls, path: Path) -> LocalSource:
        """Stat ``path``; raise :class:`InputError` if it is missing or not a file."""
        try:
            st = path.stat()
        except FileNotFoundError:
            raise InputError(f"input not found: {path}") from None
        except OSError as exc:
            raise InputError(f"cannot read input {path}: {exc.strerror}") from exc
        if path.is_dir():
            raise InputError(f"input {path} is a directory: name its files or use a glob")
        return cls(path, st.st_size, st.st_mtime)

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def read_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        with self.path.open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def open(self) -> BinaryIO:
        return self.path.open("rb")


def _local_path(text: str) -> Path:
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"file URL with a host is not supported: {text}")
        return Path(unquote(parts.path))
    return Path(text).expanduser().absolute()


def _scheme_of(text: str) -> str | None:
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0].lower()
    return None if scheme == "file" else scheme


def _registered(scheme: str, url: str) -> _Scheme:
    entry = _SCHEMES.get(scheme)
    if entry is None:
        raise InputError(f"no reader for {scheme}:// inputs ({url}); is the adapter installed?")
    return entry


def local_input_path(url: str) -> Path | None:
    """The local file an input URL or path names, or None for another scheme."""
    return _local_path(url) if _scheme_of(url) is None else None


def open_source(url: str) -> Source:
    """The Source for one URL or local path (no globbing); :class:`InputError` if missing."""
    scheme = _scheme_of(url)
    if scheme is None:
        return LocalSource.from_path(_local_path(url))
    return _registered(scheme, url).factory(url)


def _expand_one(text: str) -> list[str]:
    scheme = _scheme_of(text)
    has_glob = any(c in _GLOB_CHARS for c in text)
    if scheme is not None:
        if not has_glob:
            return [text]
        expand = _registered(scheme, text).expand
        if expand is None:
            raise InputError(f"globs are not supported for {scheme}:// inputs: {text}")
        urls = sorted(expand(text))
    elif has_glob:
        pattern = str(_local_path(text))
        urls = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    else:
        return [str(_local_path(text))]
    if not urls:
        raise InputError(f"no input matches {text}")
    return urls


def expand_inputs(paths: Iterable[str]) -> list[Source]:
    """The sources named by ``paths``, in order: each glob expanded and sorted.

    A path named twice (or matched by two globs) is read once, at its first place.
    Raises :class:`InputError` for a missing file, a glob that matches nothing, a
    directory, an unregistered URL scheme, or an empty list.
    """
    seen: set[str] = set()
    sources: list[Source] = []
    for text in paths:
        for url in _expand_one(text):
            source = open_source(url)
            if source.url in seen:
                continue
            seen.add(source.url)
            sources.append(source)
    if not sources:
        raise InputError("no input paths given")
    return sources


class RangeReader(io.RawIOBase):
    """A seekable read-only file over a Source's byte ranges (for Parquet footers)."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._source.read_range(self._pos, min(self._pos + len(buffer), self._source.size))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
