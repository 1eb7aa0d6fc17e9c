"""Inputs: expanding paths and globs, telling formats and compression, cutting lines."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from shardflow.errors import InputError
from shardflow.split import formats, sources
from shardflow.split.formats import detect_compression, detect_format, iter_line_blocks
from shardflow.split.sources import LocalSource, expand_inputs, open_source, register_scheme


def _touch(path: Path, data: bytes = b"{}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_globs_are_sorted_and_lists_keep_their_order(tmp_path: Path) -> None:
    for name in ("c.jsonl", "a.jsonl", "b.jsonl"):
        _touch(tmp_path / "in" / name)
    last = _touch(tmp_path / "z.jsonl")
    found = expand_inputs([str(last), str(tmp_path / "in" / "*.jsonl")])
    assert [Path(s.url).name for s in found] == ["z.jsonl", "a.jsonl", "b.jsonl", "c.jsonl"]


def test_a_path_named_twice_is_read_once(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.jsonl")
    found = expand_inputs([str(a), a.as_uri(), str(tmp_path / "*.jsonl")])
    assert [s.url for s in found] == [a.as_uri()]


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["missing.jsonl"], "input not found"),
        (["nothing-*.jsonl"], "no input matches"),
        (["."], "is a directory"),
        (["gs://bucket/x.jsonl"], "no reader for gs://"),
        ([], "no input paths"),
    ],
)
def test_unreadable_inputs_are_refused_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=message):
        expand_inputs(paths)


@dataclass(frozen=True)
class _BytesSource:
    url: str
    data: bytes
    mtime: float = 0.0

    @property
    def size(self) -> int:
        return len(self.data)

    def read_range(self, start: int, end: int) -> bytes:
        return self.data[start:end]

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


def test_registered_schemes_open_and_expand_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_SCHEMES", {})
    objects = {"mem://b/1.jsonl": b"{}\n", "mem://b/2.jsonl": b"{}\n"}
    register_scheme(
        "mem",
        lambda url: _BytesSource(url, objects[url]),
        expand=lambda pattern: sorted(objects, reverse=True),
    )
    found = expand_inputs(["mem://b/*.jsonl"])
    assert [s.url for s in found] == ["mem://b/1.jsonl", "mem://b/2.jsonl"]
    assert open_source("mem://b/2.jsonl").read_range(0, 2) == b"{}"


def test_globs_need_an_expander(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_SCHEMES", {})
    register_scheme("mem", lambda url: _BytesSource(url, b""))
    with pytest.raises(InputError, match="globs are not supported"):
        expand_inputs(["mem://b/*.jsonl"])


def test_local_sources_read_ranges_and_streams(tmp_path: Path) -> None:
    source = LocalSource.from_path(_touch(tmp_path / "x.jsonl", b"0123456789"))
    assert source.size == 10
    assert source.read_range(2, 5) == b"234"
    assert source.read_range(8, 20) == b"89"
    with source.open() as f:
        assert f.read() == b"0123456789"


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("a.json.zst", "jsonl"),
        ("a.CSV", "csv"),
        ("a.tsv.gz", "csv"),
        ("part-0.parquet", "parquet"),
        ("s3://b/x/data.jsonl.zstd", "jsonl"),
    ],
)
def test_format_comes_from_the_name(name: str, fmt: str) -> None:
    assert detect_format(name, None) == fmt


def test_declared_format_wins_and_unknown_ones_are_refused() -> None:
    assert detect_format("data.txt", "csv") == "csv"
    with pytest.raises(InputError, match=r"set input\.format"):
        detect_format("data.txt", None)
    with pytest.raises(InputError, match="unknown input format"):
        detect_format("a.jsonl", "xml")


def test_compression_is_told_by_magic_bytes_not_the_name(tmp_path: Path) -> None:
    gz = LocalSource.from_path(_touch(tmp_path / "a.jsonl", gzip.compress(b"{}\n")))
    zs = LocalSource.from_path(_touch(tmp_path / "b.jsonl", zstandard.compress(b"{}\n")))
    plain = LocalSource.from_path(_touch(tmp_path / "c.jsonl.gz", b"{}\n"))
    assert detect_compression(gz) == "gzip"
    assert detect_compression(zs) == "zstd"
    assert detect_compression(plain) == "none"
    assert detect_compression(plain, "gzip") == "gzip"


def test_line_blocks_hold_every_line_once_whatever_the_block_size() -> None:
    data = b"a\r\n\nbb\n" + b"x" * 50 + b"\nlast"
    for size in (1, 2, 3, 7, 64, 1000):
        blocks = list(iter_line_blocks(io.BytesIO(data), max_line=100, block_size=size))
        lines = [line for b in blocks for line in b.lines]
        assert lines == [b"a\r", b"", b"bb", b"x" * 50, b"last"]
        assert not blocks[-1].final_newline


def test_over_long_lines_are_never_held_whole() -> None:
    data = b"ok\n" + b"y" * 5000 + b"\nafter\n" + b"z" * 3000
    blocks = list(iter_line_blocks(io.BytesIO(data), max_line=100, block_size=256))
    long = [(b.overlong, b.final_newline) for b in blocks if b.overlong >= 0]
    assert long == [(5000, True), (3000, False)]
    assert max(len(line) for b in blocks for line in b.lines) <= formats.HEAD_BYTES
    assert [line for b in blocks if b.overlong < 0 for line in b.lines] == [b"ok", b"after"]
