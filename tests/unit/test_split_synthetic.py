"""The seeded synthetic data generator and its script."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from shardflow.testing.synthetic import write_csv, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    for compression in ("none", "gzip", "zstd"):
        one, two = tmp_path / f"1.{compression}", tmp_path / f"2.{compression}"
        write_jsonl(one, 300, seed=7, malformed_every=9, compression=compression)
        write_jsonl(two, 300, seed=7, malformed_every=9, compression=compression)
        assert one.read_bytes() == two.read_bytes()
    write_jsonl(two, 300, seed=8)
    assert (tmp_path / "1.none").read_bytes() != two.read_bytes()


def test_counts_describe_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    stats = write_jsonl(path, 100, malformed_every=10, duplicate_every=25, compression="gzip")
    lines = gzip.decompress(path.read_bytes()).splitlines()
    assert len(lines) == stats.lines == 110
    assert stats.malformed_lines == tuple(range(11, 111, 11))
    good = [orjson.loads(x) for i, x in enumerate(lines, 1) if i not in stats.malformed_lines]
    ids = [r["id"] for r in good]
    assert len(good) == stats.records == 100
    assert len(ids) - len(set(ids)) == stats.duplicates == 4
    assert set(good[0]) == {"id", "name", "email", "age", "country", "score", "tags"}
    assert (stats.malformed_split, stats.malformed_json) == (3, 7)


def test_csv_records_include_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    stats = write_csv(path, 20, malformed_every=5)
    text = path.read_bytes()
    assert text.startswith(b"id,name,email,age,country,score,tags,note\n")
    assert text.count(b"\n") == stats.lines == 1 + 20 + 2 + 4
    assert b'"said ""hi"", then\nleft"' in text


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate_every"):
        write_jsonl(tmp_path / "x", 1, duplicate_every=1)
    with pytest.raises(ValueError, match="compression"):
        write_jsonl(tmp_path / "x", 1, compression="lz4")


def test_the_script_writes_data_and_prints_counts(tmp_path: Path) -> None:
    out = tmp_path / "users.csv.zst"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "generate-data"),
            "--records",
            "50",
            "--out",
            str(out),
            "--format",
            "csv",
            "--zstd",
            "--malformed-every",
            "10",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    summary = json.loads(proc.stdout)
    assert summary["records"] == 50
    assert summary["malformed_split"] == 5
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
