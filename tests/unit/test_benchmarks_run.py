"""Every benchmark still runs: each at ``--size tiny`` in a subprocess, printing its table.

Benchmarks measure, they are not timed tests: nothing here checks a figure, only that a
script runs to the end against the current code and prints the report it promises (text
tables, or one JSON object with ``--json``), and that ``run_all`` writes the Markdown
report into a document between its markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.run_all import BEGIN, END, available

REPO = Path(__file__).resolve().parents[2]

# what each benchmark's text report must contain: its title and a table heading
EXPECTED = {
    "map_overhead": ("1. Map overhead", "own cost"),
    "task_overhead": ("2. Per-task overhead", "slot-ms per task"),
    "split_throughput": ("3. Split throughput", "read lines (floor)"),
    "aggregation": ("4. Aggregation", "outputs/min"),
    "status_latency": ("5. Status latency", "p95 ms"),
    "aws_requests": ("6. AWS request counts", "projected request bill"),
    "metrics_overhead": ("7. Metrics overhead", "collection %"),
    "scale": ("9. Scale", "slot-ms per task"),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work folder for the module: the generated inputs are cached there."""
    return tmp_path_factory.mktemp("bench")


def run(args: list[str], workdir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", *args, "--workdir", str(workdir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def test_every_workload_has_a_benchmark() -> None:
    assert set(EXPECTED) <= set(available())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_benchmark_prints_its_table_at_tiny_size(name: str, workdir: Path) -> None:
    proc = run([f"benchmarks.{name}", "--size", "tiny"], workdir)
    title, heading = EXPECTED[name]
    assert title in proc.stdout
    assert heading in proc.stdout
    assert "(size tiny, median of 1)" in proc.stdout


def test_json_report_has_tables_with_full_rows(workdir: Path) -> None:
    proc = run(["benchmarks.status_latency", "--size", "tiny", "--json"], workdir)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["name"] == "status_latency"
    assert report["machine"]["cpus"] == os.cpu_count()
    for table in report["tables"]:
        assert table["rows"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"])


def test_run_all_writes_the_markdown_into_the_doc(tmp_path: Path, workdir: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nold\n{END}\n\nfindings\n")
    run(
        [
            "benchmarks.run_all",
            "--size",
            "tiny",
            "--only",
            "status_latency",
            "--update-doc",
            str(doc),
        ],
        workdir,
    )
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n")
    assert text.endswith(f"{END}\n\nfindings\n")
    assert "old" not in text
    assert "Produced by `python -m benchmarks.run_all --size tiny" in text
    assert "| subprocess | status |" in text
