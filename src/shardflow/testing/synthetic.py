"""Seeded synthetic inputs: user-like records with known malformed and duplicate lines.

The same arguments always write the same bytes (compressed output too: no timestamps).
Record ``i`` (0-based, good records only) has id ``u{i:07d}``, unless it is a duplicate:
with ``duplicate_every=K`` every K-th record reuses the id of the record K//2 before it.
With ``malformed_every=K`` a malformed line follows every K-th record; malformed lines
cycle through kinds, see :class:`Stats`.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

_FIRST = ("Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances")
_LAST = ("Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie")
_COUNTRIES = ("DE", "FR", "GB", "US", "JP", "BR", "IN", "NG", "ES", "SE")
_TAGS = ("new", "vip", "churn-risk", "beta", "mobile", "desktop", "trial", "paid")
CSV_COLUMNS = ("id", "name", "email", "age", "country", "score", "tags", "note")


@dataclass(frozen=True)
class Stats:
    """What was written.

    ``records`` counts good record lines (duplicates included), ``duplicates`` those whose
    id repeats an earlier one. ``malformed_split`` counts malformed lines any split rejects
    (invalid UTF-8; for CSV also a wrong column count); ``malformed_json`` counts lines of
    bad JSON or JSON that is not an object, which the split rejects only when it reads
    keys (otherwise the reader reports them). ``malformed_lines`` are their 1-based line
    numbers; ``lines`` counts physical lines, ``bytes`` the uncompressed size.
    """

    records: int
    duplicates: int
    malformed_split: int
    malformed_json: int
    malformed_lines: tuple[int, ...]
    lines: int
    bytes: int

    @property
    def malformed(self) -> int:
        return self.malformed_split + self.malformed_json

    @property
    def unique(self) -> int:
        return self.records - self.duplicates


def _check(n: int, malformed_every: int, duplicate_every: int, compression: str) -> None:
    if n < 0 or malformed_every < 0 or duplicate_every < 0:
        raise ValueError("n, malformed_every and duplicate_every must not be negative")
    if duplicate_every == 1:
        raise ValueError("duplicate_every must be 0 or at least 2")
    if compression not in ("none", "gzip", "zstd"):
        raise ValueError(f"unknown compression {compression!r}: use none, gzip or zstd")


@contextmanager
def _open(path: Path, compression: str) -> Iterator[IO[bytes]]:
    with Path(path).open("wb") as raw:
        if compression == "gzip":
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz:
                yield cast(IO[bytes], gz)
        elif compression == "zstd":
            import zstandard

            with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as zw:
                yield zw
        else:
            yield raw


_TAG_SETS = tuple([t for b, t in enumerate(_TAGS) if (m >> b) & 1][:3] for m in range(256))
_NAMES = tuple((f"{f} {la}", f"{f.lower()}.{la.lower()}") for f in _FIRST for la in _LAST)


def _record(i: int, rng: random.Random, duplicate_every: int) -> tuple[dict[str, Any], bool]:
    dup = duplicate_every > 0 and i % duplicate_every == duplicate_every - 1
    ident = i - duplicate_every // 2 if dup else i
    bits = rng.getrandbits(64)
    name, mail = _NAMES[bits % len(_NAMES)]
    record = {
        "id": f"u{ident:07d}",
        "name": name,
        "email": f"{mail}{i}@example.com",
        "age": 18 + (bits >> 8) % 73,
        "country": _COUNTRIES[(bits >> 16) % len(_COUNTRIES)],
        "score": ((bits >> 24) % 100_000) / 1000,
        "tags": _TAG_SETS[(bits >> 48) & 0xFF],
    }
    return record, dup


def write_jsonl(
    path: Path | str,
    n: int,
    *,
    seed: int = 0,
    malformed_every: int = 0,
    compression: str = "none",
    duplicate_every: int = 0,
) -> Stats:
    """Write ``n`` good JSONL records (plus malformed lines) to ``path``; return the counts.

    Malformed kinds cycle: truncated JSON, a JSON array, invalid UTF-8.
    """
    _check(n, malformed_every, duplicate_every, compression)
    rng = random.Random(seed)
    dumps = orjson.dumps
    duplicates = bad_split = bad_json = size = line = 0
    bad_lines: list[int] = []
    buf: list[bytes] = []
    with _open(Path(path), compression) as out:
        for i in range(n):
            record, dup = _record(i, rng, duplicate_every)
            duplicates += dup
            buf.append(dumps(record))
            line += 1
            if malformed_every and (i + 1) % malformed_every == 0:
                kind = len(bad_lines) % 3
                line += 1
                bad_lines.append(line)
                if kind == 0:
                    buf.append(b'{"id": "broken%d", "name": "trunc' % i)
                    bad_json += 1
                elif kind == 1:
                    buf.append(b'["not", "an", "object", %d]' % i)
                    bad_json += 1
                else:
                    buf.append(b'{"id": "bad\xff\xfe%d"}' % i)
                    bad_split += 1
            if len(buf) >= 4096:
                size += _flush(out, buf)
        size += _flush(out, buf)
    return Stats(n, duplicates, bad_split, bad_json, tuple(bad_lines), line, size)


def _flush(out: IO[bytes], buf: list[bytes]) -> int:
    if not buf:
        return 0
    data = b"\n".join(buf) + b"\n"
    out.write(data)
    buf.clear()
    return len(data)


def write_csv(
    path: Path | str,
    n: int,
    *,
    seed: int = 0,
    malformed_every: int = 0,
    compression: str = "none",
    duplicate_every: int = 0,
) -> Stats:
    """Write a header and ``n`` good CSV records (plus malformed rows); return the counts.

    Every 10th record's ``note`` holds a quoted comma, quotes and a newline (so that record
    takes two lines). Malformed kinds alternate: a row with too few columns, invalid UTF-8.
    """
    _check(n, malformed_every, duplicate_every, compression)
    rng = random.Random(seed)
    duplicates = bad_split = size = 0
    bad_lines: list[int] = []
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    line = 1
    with _open(Path(path), compression) as out:
        for i in range(n):
            record, dup = _record(i, rng, duplicate_every)
            duplicates += dup
            note = 'said "hi", then\nleft' if i % 10 == 9 else f"note {i}"
            row = [*(record[c] for c in CSV_COLUMNS[:6]), "|".join(record["tags"]), note]
            writer.writerow(row)
            line += 2 if i % 10 == 9 else 1
            if malformed_every and (i + 1) % malformed_every == 0:
                line += 1
                bad_lines.append(line)
                bad_split += 1
                if len(bad_lines) % 2:
                    text.write(f"broken{i},too,few\n")
                else:
                    size += _flush_text(out, text)
                    out.write(b"bad\xff%d,a,b,c,d,e,f,g\n" % i)
                    size += len(b"bad\xff%d,a,b,c,d,e,f,g\n" % i)
            if text.tell() > 1 << 20:
                size += _flush_text(out, text)
        size += _flush_text(out, text)
    return Stats(n, duplicates, bad_split, 0, tuple(bad_lines), line, size)


def _flush_text(out: IO[bytes], text: io.StringIO) -> int:
    data = text.getvalue().encode()
    out.write(data)
    text.seek(0)
    text.truncate()
    return len(data)
