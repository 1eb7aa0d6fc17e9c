"""The README's quickstart job, run through the real command line."""

from __future__ import annotations

from pathlib import Path

from shardflow.objectstore.local import LocalObjectStore
from shardflow.testing.invariants import check_invariants, read_job_output
from tests.e2e.helpers import REPO, run_json, shardflow

QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"
# the example data: 2,000 records, 1 malformed line, 1 duplicate key, 5 bad emails
INPUT_LINES = 2002


def test_quickstart_runs_to_completion_from_another_folder(tmp_path: Path) -> None:
    summary = run_json(["run", str(QUICKSTART), "--job-id", "qs"], tmp_path, check=0)

    assert summary["status"] == "SUCCEEDED"
    assert summary["items"] == {
        "total": 2000,
        "succeeded": 1995,
        "failed": 5,
        "rejected": 2,
        "duplicates": 1,
    }
    assert summary["output_uri"].endswith("/jobs/qs/output/results.parquet")
    out = read_job_output(LocalObjectStore(tmp_path / ".shardflow" / "store"), "qs")
    check_invariants(out, input_records=INPUT_LINES, expected_rejects=2)
    assert out.results.num_rows == 1995
    reasons = sorted(out.rejects.column("message").to_pylist())
    assert any("duplicate key 'u001500'" in r for r in reasons)
    failed = out.failures.to_pylist()
    assert {f["error_class"] for f in failed} == {"permanent"}
    assert all("not an email address" in f["message"] for f in failed)


def test_rerun_of_a_finished_job_changes_nothing(tmp_path: Path) -> None:
    first = run_json(["run", str(QUICKSTART), "--job-id", "again"], tmp_path, check=0)
    store = LocalObjectStore(tmp_path / ".shardflow" / "store")
    before = read_job_output(store, "again").manifest
    second = run_json(["run", str(QUICKSTART), "--job-id", "again"], tmp_path, check=0)
    assert second["items"] == first["items"]
    assert read_job_output(store, "again").manifest == before


def test_status_reports_the_finished_job(tmp_path: Path) -> None:
    run_json(["run", str(QUICKSTART), "--job-id", "st"], tmp_path, check=0)
    status = run_json(["status", "st"], tmp_path, check=0)
    assert status["status"] == "SUCCEEDED"
    assert status["tasks"]["SUCCEEDED"] == status["tasks"]["total"] == 9
    listing = shardflow(["status"], tmp_path, check=0).stdout
    assert "st " in listing
    assert "SUCCEEDED" in listing
