"""A canary secret planted everywhere a secret could enter a job, searched for in every
artefact the job leaves: it must appear nowhere.

The canaries: the value of a secret environment variable (``SHARDFLOW_CANARY_TOKEN``),
logged by the handler at INFO and WARNING, and of ``SLACK_WEBHOOK_URL`` and
``PD_ROUTING_KEY`` (the names the alert docs recommend); a token of each well-known
format (``security/tokens.py``) in every failing item's error; and the value of a
record field listed under ``secrets:``, in the message of an exception whose text holds
the whole record. The input file holds the field canary, and it lives outside the
workspace.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.helpers import shardflow, write_job

RECORDS = 40
FAILING = [i for i in range(RECORDS) if i % 7 == 3]

HANDLER = """
import os


def process(record, ctx):
    token = os.environ["SHARDFLOW_CANARY_TOKEN"]
    ctx.logger.info("calling the API with key=%s", token)
    ctx.logger.warning("auth: %s", token)
    hook, key = os.environ["SLACK_WEBHOOK_URL"], os.environ["PD_ROUTING_KEY"]
    ctx.logger.warning("alerting %s / %s", hook, key)
    if record["id"] % 7 == 3:
        # CANARY_FORMATS is not a secret name: only the token patterns can mask these
        raise ValueError(f"cannot enrich {record!r}: refused {os.environ['CANARY_FORMATS']}")
    return {"id": record["id"], "marker": record["marker"]}
"""


def forged_tokens(core: str) -> str:
    """One token of each well-known format around ``core`` (hex, at least 40 chars)."""
    return " ".join(
        [
            f"https://hooks.slack.com/services/T0/B0/{core}",
            f"xoxb-{core}",
            f"xapp-{core}",
            f"ghp_{core}",
            f"github_pat_{core}",
            f"glpat-{core}",
            f"sk_live_{core}",
            f"rk_test_{core}",
            f"whsec_{core}",
            f"AIza{core[:35]}",
            f"npm_{core[:36]}",
            f"pypi-{core}",
            f"SG.{core}.{core}",
            f"eyJhbGciOiJIUzI1NiJ9.eyJ{core}.{core}",
            f"password: {core}",
        ]
    )


def _readable(path: Path) -> Iterator[str]:
    """The text inside a file that compression or encoding would hide from a byte
    search: Parquet and Arrow IPC decoded to rows, SQLite dumped."""
    head = path.read_bytes()[:16]
    if head.startswith(b"PAR1"):
        import pyarrow.parquet as pq

        yield orjson.dumps(pq.read_table(path).to_pylist(), default=str).decode()
    elif head.startswith(b"ARROW1"):
        import pyarrow as pa

        with pa.memory_map(str(path)) as source:
            yield orjson.dumps(pa.ipc.open_file(source).read_all().to_pylist()).decode()
    elif head.startswith(b"SQLite format 3\x00"):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            yield from db.iterdump()
        finally:
            db.close()


def find(needle: str, root: Path, streams: dict[str, str]) -> list[str]:
    """Where ``needle`` occurs: every file under ``root`` (raw bytes, and decoded) and
    the captured output streams."""
    hits = [name for name, text in streams.items() if needle in text]
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if needle.encode() in path.read_bytes():
            hits.append(str(path))
        elif any(needle in text for text in _readable(path)):
            hits.append(f"{path} (decoded)")
    return hits


ISOLATION_GAP = (
    "gap in shardflow/worker/isolation.py: the isolated handler's child process does not "
    "configure logging, so its WARNING lines reach the slot log through logging's "
    "last-resort handler, unredacted"
)


@pytest.mark.parametrize(
    "isolation",
    [
        pytest.param(False, id="in-process"),
        pytest.param(True, id="isolated"),
    ],
)
def test_canary_secrets_appear_in_no_artefact_of_the_job(tmp_path: Path, isolation: bool) -> None:
    env_canary = "envcanary" + secrets.token_hex(12)
    field_canary = "fieldcanary" + secrets.token_hex(12)
    token_core = secrets.token_hex(20)
    webhook = "https://alerts.example.com/hook/" + secrets.token_hex(12)
    routing_key = "routing" + secrets.token_hex(12)
    inputs, work = tmp_path / "input", tmp_path / "work"
    inputs.mkdir()
    work.mkdir()
    (inputs / "handler.py").write_text(HANDLER, encoding="utf-8")
    rows = [
        {"id": i, "ssn": f"{field_canary}-{i:03d}", "marker": f"visible-{i:03d}"}
        for i in range(RECORDS)
    ]
    (inputs / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    job = write_job(
        inputs / "job.yaml",
        f"""
name: canary
handler: handler.py:process
input: {{path: in.jsonl, id_field: id}}
batching: {{records: 10}}
resources: {{slots: 2}}
retry: {{tolerated_failure_percent: 50}}
worker: {{isolation: {str(isolation).lower()}}}
secrets: [ssn]
""",
    )
    proc = shardflow(
        ["run", str(job), "--json", "--job-id", "canary"],
        work,
        env={
            "SHARDFLOW_CANARY_TOKEN": env_canary,
            "SLACK_WEBHOOK_URL": webhook,
            "PD_ROUTING_KEY": routing_key,
            "CANARY_FORMATS": forged_tokens(token_core),
        },
        check=0,
    )
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["items"]["failed"] == len(FAILING)
    streams = {"stdout": proc.stdout, "stderr": proc.stderr}

    # the search sees through Parquet compression: the handler's own output is found
    assert find("visible-001", work, streams)
    # the failure records are there, with the record's secret field masked
    failures = [
        r
        for text in _all_failure_rows(work)
        for r in orjson.loads(text)
        if r.get("kind") == "failed"
    ]
    assert sorted(int(r["key"]) for r in failures) == FAILING
    assert all("'ssn': '***'" in r["message"] for r in failures)
    # … and each forged token masked where its secret part starts
    assert all("ghp_***" in r["message"] and "sk_live_***" in r["message"] for r in failures)

    assert find(env_canary, work, streams) == []
    assert find(field_canary, work, streams) == []
    for needle in (token_core, webhook, routing_key):
        assert find(needle, work, streams) == [], needle


def _all_failure_rows(root: Path) -> Iterator[str]:
    for path in root.rglob("*.failures.arrow"):
        yield from _readable(path)
