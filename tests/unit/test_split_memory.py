"""The split's memory stays bounded: 2M records with keys checked, under 300 MB peak RSS."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from shardflow.layout import Layout
from shardflow.objectstore.local import LocalObjectStore
from shardflow.split.plan import split_input
from shardflow.split.spec import SplitSpec
from shardflow.testing.synthetic import write_jsonl
from shardflow.worker.metrics import peak_rss_kb

RECORDS = 2_000_000
LIMIT_MB = 300


def split_and_measure(path: str, store_root: str) -> tuple[int, int, float]:
    """Run in a fresh (spawned) process: split, then report records, duplicates, peak MB."""
    spec = SplitSpec(paths=(path,), id_field="id")
    result = split_input(
        spec, job_id="mem", store=LocalObjectStore(Path(store_root)), layout=Layout("mem"), now=0
    )
    peak_mb = peak_rss_kb() / 1024  # the spawned process's own peak, not its parent's
    return result.records, result.duplicates, peak_mb


def test_splitting_two_million_records_stays_under_300_mb(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    stats = write_jsonl(path, RECORDS, duplicate_every=400_000)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        records, duplicates, peak_mb = pool.submit(
            split_and_measure, str(path), str(tmp_path / "store")
        ).result(timeout=240)
    assert (records, duplicates) == (stats.unique, stats.duplicates)
    assert peak_mb < LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
