"""The audit log through the real command line: control commands leave entries naming
their actor, `audit verify` exits 1 naming a tampered entry, and configs that carry
credentials are refused at submit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shardflow.cli.audit import audit
from shardflow.security.audit import entry_key
from shardflow.testing.synthetic import write_jsonl
from tests.e2e.helpers import shardflow, write_job

HANDLERS = Path(__file__).parents[1] / "e2e" / "handlers_e2e.py"


def make_job(folder: Path) -> Path:
    write_jsonl(folder / "in.jsonl", 200, seed=5)
    return write_job(
        folder / "job.yaml",
        f"""
name: audit-test
handler: {HANDLERS}:enrich
input: {{path: in.jsonl, id_field: id}}
batching: {{records: 50}}
resources: {{slots: 1}}
""",
    )


def run_audit(folder: Path, *args: str) -> tuple[int, str]:
    store = str(folder / ".shardflow" / "store")
    result = CliRunner().invoke(audit, [args[0], "--storage", store, *args[1:]])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def controlled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job submitted, paused, resumed and cancelled, and another one purged."""
    folder = tmp_path_factory.mktemp("audit-cli")
    job = make_job(folder)
    shardflow(["submit", str(job), "--job-id", "aud1"], folder, check=0)
    for command in (["pause", "aud1"], ["resume", "aud1"], ["cancel", "aud1"]):
        shardflow(command, folder, check=0)
    shardflow(["pause", "aud1"], folder, check=2)  # refused on a cancelled job: no entry
    shardflow(["submit", str(job), "--job-id", "aud2"], folder, check=0)
    shardflow(["purge", "aud2", "--yes"], folder, check=0)
    return folder


def test_submissions_and_control_commands_are_recorded_with_their_actor(
    controlled: Path,
) -> None:
    code, out = run_audit(controlled, "show", "--json")
    assert code == 0
    entries = json.loads(out)
    assert [(e["action"], e["job_id"]) for e in entries] == [
        ("job.submit", "aud1"),
        ("job.dispatch", "aud1"),
        ("job.pause", "aud1"),
        ("job.resume", "aud1"),
        ("job.cancel", "aud1"),
        ("job.submit", "aud2"),
        ("job.dispatch", "aud2"),
        ("job.purge", "aud2"),
    ]
    # submit records the user at the host; control commands say they came from the CLI
    user = entries[0]["actor"]
    assert "@" in user
    assert [e["actor"] for e in entries] == [
        user if e["action"] in ("job.submit", "job.dispatch") else f"cli:{user}" for e in entries
    ]
    assert entries[0]["detail"]["name"] == "audit-test"
    assert len(entries[0]["detail"]["config_sha256"]) == 64
    assert entries[1]["detail"]["tasks"] == 4


def test_show_filters_by_job_and_refuses_a_malformed_id(controlled: Path) -> None:
    code, out = run_audit(controlled, "show", "--job", "aud2")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[3] for line in lines] == ["job.submit", "job.dispatch", "job.purge"]
    code, out = run_audit(controlled, "show", "--job", "../aud2")
    assert code == 2
    assert "invalid job id" in out


def test_verify_exits_0_on_an_intact_log_and_1_naming_a_tampered_entry(
    controlled: Path, tmp_path: Path
) -> None:
    code, out = run_audit(controlled, "verify")
    assert (code, out.startswith("audit log intact: 8 entries")) == (0, True)
    head = out.split()[-1]
    # tamper with a copy, so the other tests see the intact log
    copy = tmp_path / "copy"
    (copy / ".shardflow" / "store" / "audit").mkdir(parents=True)
    for path in (controlled / ".shardflow" / "store" / "audit").iterdir():
        (copy / ".shardflow" / "store" / "audit" / path.name).write_bytes(path.read_bytes())
    entry = copy / ".shardflow" / "store" / entry_key(4)
    body = json.loads(entry.read_bytes())
    body["actor"] = "cli:nobody@nowhere"
    entry.write_text(json.dumps(body), encoding="utf-8")
    code, out = run_audit(copy, "verify")
    assert code == 1
    assert "TAMPERED" in out
    assert "first bad entry: 4" in out
    assert "cli:nobody@nowhere" in out  # the entry itself is printed
    # entries cut from the end: caught with the head noted before
    for seq in (5, 6, 7):
        (copy / ".shardflow" / "store" / entry_key(seq)).unlink()
    entry.write_bytes((controlled / ".shardflow" / "store" / entry_key(4)).read_bytes())
    assert run_audit(copy, "verify")[0] == 0
    code, out = run_audit(copy, "verify", "--head", head, "--json")
    assert code == 1
    assert json.loads(out)["first_bad_seq"] == 5


def test_verify_of_a_store_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run_audit(tmp_path, "verify")
    assert code == 2
    assert "no shardflow store" in out
    assert not (tmp_path / ".shardflow").exists()  # nothing was created


def test_a_backend_url_with_credentials_is_refused_at_submit(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    proc = shardflow(
        [
            "submit",
            str(job),
            "--set",
            "backends.endpoint_url=http://admin:hunter2@127.0.0.1:5000",
        ],
        tmp_path,
        check=2,
    )
    assert "backends.endpoint_url" in proc.stderr
    assert "provider chain" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout
    # nothing of the job was stored
    assert not list((tmp_path / ".shardflow" / "store").rglob("*.json"))
