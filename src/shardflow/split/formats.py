"""Input formats and compression: detection, decompression and line scanning.

Compression is told by magic bytes (gzip ``1f 8b``, zstd ``28 b5 2f fd``), so a gzip file
named ``.jsonl`` is still read right; the format comes from the spec or the file's name.
:func:`iter_line_blocks` cuts a byte stream into blocks of whole lines with bounded
memory: a line longer than ``max_line`` is never held whole, only its first bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, NamedTuple, Protocol, cast

from shardflow.errors import InputError
from shardflow.split.sources import Source
from shardflow.split.spec import FORMATS

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: bytes read per block; also the granularity of the reader's ranged reads
BLOCK_SIZE = 4 << 20
#: bytes of an over-long line kept for its reject entry
HEAD_BYTES = 1024

_COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_FORMAT_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _suffixes(url: str) -> list[str]:
    name = url.rstrip("/").rsplit("/", 1)[-1].lower()
    return ["." + part for part in name.split(".")[1:]]


def detect_format(url: str, declared: str | None) -> str:
    """The format of one input: ``declared`` if given, else from the name.

    Raises :class:`InputError` for an unknown declared format or a name that says none.
    """
    if declared is not None:
        if declared not in FORMATS:
            raise InputError(f"unknown input format {declared!r}: use one of {sorted(FORMATS)}")
        return declared
    suffixes = _suffixes(url)
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    if suffixes and suffixes[-1] in _FORMAT_SUFFIXES:
        return _FORMAT_SUFFIXES[suffixes[-1]]
    raise InputError(f"cannot tell the format of {url} from its name: set input.format")


def detect_compression(source: Source, declared: str = "auto") -> str:
    """``gzip``, ``zstd`` or ``none``: ``declared`` unless it is ``auto``, else magic bytes."""
    if declared != "auto":
        if declared not in ("none", "gzip", "zstd"):
            raise InputError(f"unknown compression {declared!r}: use auto, none, gzip or zstd")
        return declared
    head = source.read_range(0, 4)
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


class ByteStream(Protocol):
    def read(self, size: int, /) -> bytes: ...


class HashingReader:
    """Passes reads through while computing the SHA-256 of every byte read."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> str:
        """Read what is left (bytes after the last compressed frame) and return the digest."""
        while self.read(BLOCK_SIZE):
            pass
        return self.sha256.hexdigest()

    def close(self) -> None:
        self._raw.close()


def decompressed(raw: Any, compression: str) -> IO[bytes]:
    """A stream of the plain bytes of ``raw`` (not closed when the result is closed)."""
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
        return cast(IO[bytes], reader)
    return cast(IO[bytes], raw)


def decompression_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a corrupt compressed stream raises while being read."""
    import zstandard

    return (gzip.BadGzipFile, EOFError, zlib.error, zstandard.ZstdError)


class LineBlock(NamedTuple):
    """Whole lines of a stream, without their ``\\n``.

    ``final_newline`` tells whether the last line ended with ``\\n`` (only the last line of
    the stream may not). When ``overlong >= 0`` the block is one line of ``overlong`` bytes
    that was too long to hold, and ``lines`` holds only its first bytes.
    """

    lines: list[bytes]
    final_newline: bool
    overlong: int = -1


def iter_line_blocks(
    stream: ByteStream, max_line: int, block_size: int | None = None
) -> Iterator[LineBlock]:
    """Cut ``stream`` into :class:`LineBlock` s; memory stays within a few blocks.

    A line is reported as ``overlong`` only once it is longer than ``max_line`` and does
    not fit in a block; shorter over-long lines come in normal blocks and callers check
    their length (both ways give the same answer: longer than ``max_line``).
    """
    block_size = block_size or BLOCK_SIZE
    carry = b""
    skip_head: bytes | None = None
    skip_len = 0
    while True:
        data = stream.read(block_size)
        if not data:
            break
        if skip_head is not None:
            nl = data.find(b"\n")
            if len(skip_head) < HEAD_BYTES:
                skip_head += data[: min(HEAD_BYTES - len(skip_head), len(data) if nl < 0 else nl)]
            if nl < 0:
                skip_len += len(data)
                continue
            yield LineBlock([skip_head], True, skip_len + nl)
            skip_head = None
            data = data[nl + 1 :]
        last = data.rfind(b"\n")
        if last < 0:
            carry += data
        else:
            lines = (carry + data[:last] if carry else data[:last]).split(b"\n")
            carry = data[last + 1 :]
            yield LineBlock(lines, True)
        if len(carry) > max_line:
            skip_head, skip_len, carry = carry[:HEAD_BYTES], len(carry), b""
    if skip_head is not None:
        yield LineBlock([skip_head], False, skip_len)
    elif carry:
        yield LineBlock([carry], False)


def block_spans(block: LineBlock) -> list[int]:
    """The number of stream bytes each line of ``block`` takes (its newline included)."""
    if block.overlong >= 0:
        return [block.overlong + (1 if block.final_newline else 0)]
    spans = [n + 1 for n in map(len, block.lines)]
    if not block.final_newline:
        spans[-1] -= 1
    return spans
