"""The mistakes a newcomer makes, each run as they would run it: it ends in seconds, with
the usual exit code (1: the job failed, 2: usage or config), one line naming what to fix,
no traceback, and no job left live (PENDING, SPLITTING, RUNNING, AGGREGATING) in the state
store because of it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shardflow.models import JobStatus
from shardflow.statestore.sqlite import SqliteStateStore
from shardflow.testing.synthetic import write_jsonl
from tests.e2e.helpers import shardflow

GOOD = """\
def process(record, ctx):
    return {"id": record["id"]}
"""
JOB = """\
name: mistake
handler: {handler}
input: {{path: in.jsonl}}
batching: {{records: 20}}
{extra}"""
LIVE = {JobStatus.PENDING, JobStatus.SPLITTING, JobStatus.RUNNING, JobStatus.AGGREGATING}


@dataclass(frozen=True)
class Mistake:
    id: str
    code: int
    says: str  # a regular expression the error line matches
    handler: str = "handler.py:process"
    extra: str = ""  # more of the job file
    files: dict[str, str] = field(default_factory=dict)
    command: str = "run"
    needs: str = ""  # "aws" or "slurm"


MISTAKES = [
    # the handler
    Mistake("handler function misspelt", 1, r"handler cannot be loaded: .*has no 'proces'",
            handler="handler.py:proces"),
    Mistake("handler file missing", 1, r"handler cannot be loaded: .*enrich\.py does not exist",
            handler="enrich.py:process"),
    Mistake("handler module missing", 1, r"handler cannot be loaded: .*no module named 'handlrs'",
            handler="handlrs.enrich:process"),
    Mistake("handler with a syntax error", 1, r"handler cannot be loaded: .*syntax error",
            files={"handler.py": "def process(record, ctx)\n    return record\n"}),
    Mistake("handler that fails to import", 1,
            r"handler cannot be loaded: .*ModuleNotFoundError: No module named 'requestz'",
            files={"handler.py": "import requestz\n" + GOOD}),
    Mistake("handler not callable", 1, r"handler cannot be loaded: .*is a int, not a function",
            files={"handler.py": "process = 3\n"}),
    Mistake("handler with the wrong arguments", 1,
            r"handler cannot be loaded: .*takes \(record\) but is called as process\(record, ctx\)",
            files={"handler.py": "def process(record):\n    return record\n"}),
    Mistake("validate: handler function misspelt", 2,
            r"job\.yaml:2: handler: .*defines no 'proces'",
            handler="handler.py:proces", command="validate"),
    Mistake("validate: handler file missing", 2, r"job\.yaml:2: handler: .*does not exist",
            handler="nothere.py:process", command="validate"),
    # the job file
    Mistake("a top-level key misspelt", 2, r"job\.yaml:5:1: hanlder: unknown key 'hanlder'",
            extra="hanlder: x\n"),
    Mistake("a nested key misspelt", 2, r"job\.yaml:5:\d+: resources\.slot: unknown key 'slot'",
            extra="resources: {slot: 2}\n"),
    Mistake("a number that is a word", 2, r"job\.yaml:5:\d+: retry\.max_attempts:",
            extra="retry: {max_attempts: many}\n"),
    Mistake("a duration that is not one", 2, r"job\.yaml:5:\d+: worker\.lease_ttl:",
            extra="worker: {lease_ttl: soon}\n"),
    Mistake("a rate that is not one", 2, r"job\.yaml:5:\d+: rate_limits\.geo\.rate:",
            extra="rate_limits: {geo: {rate: fast}}\n"),
    Mistake("an output format that does not exist", 2, r"job\.yaml:5:\d+: output\.format:",
            extra="output: {format: xlsx}\n"),
    Mistake("an input format that does not exist", 2, r"job\.yaml:3:\d+: input\.format:",
            files={"job.yaml": JOB.format(handler="handler.py:process", extra="").replace(
                "input: {path: in.jsonl}", "input: {path: in.jsonl, format: xml}")}),
    Mistake("a storage URL of an unknown kind", 2,
            r"job\.yaml:5:\d+: backends\.storage: unsupported storage location 'ftp://host/x'",
            extra="backends: {storage: 'ftp://host/x'}\n"),
    Mistake("DynamoDB state without a queue", 2,
            r"backends\.queue: with state on DynamoDB set a queue URL",
            extra="backends: {state: 'dynamodb://t?region=eu-west-1'}\n"),
    Mistake("YAML that does not parse", 2, r"job\.yaml:\d+:\d+: YAML syntax error",
            extra="retry: {max_attempts: 3\n"),
    # the input
    Mistake("input path missing", 2, r"input not found: .*nothere\.jsonl",
            files={"job.yaml": JOB.format(handler="handler.py:process", extra="")
                   .replace("in.jsonl", "nothere.jsonl")}),
    Mistake("input glob matching nothing", 2, r"no input matches .*\*\.csv",
            files={"job.yaml": JOB.format(handler="handler.py:process", extra="")
                   .replace("in.jsonl", "'*.csv'")}),
    Mistake("input empty", 2, r"no record to process \(the input is empty\)",
            files={"in.jsonl": ""}),
    # AWS resources (moto)
    Mistake("DynamoDB table missing", 2,
            r"error: .*ResourceNotFoundException.*does not exist; create it with `shardflow doctor",
            extra="backends: {{state: 'dynamodb://nosuchtable?region=us-east-1', "
            "queue: 'sqs://mistake', endpoint_url: '{endpoint}'}}\n", needs="aws"),
    Mistake("S3 bucket missing", 2,
            r"error: .*NoSuchBucket.*does not exist; create it with `shardflow doctor",
            extra="backends: {{storage: 's3://nosuchbucket/x', endpoint_url: '{endpoint}', "
            "region: us-east-1}}\n", needs="aws"),
    Mistake("AWS endpoint that does not answer", 2, r"error: .*cannot reach the AWS endpoint",
            extra="backends: {{storage: 's3://somebucket/x', endpoint_url: 'http://127.0.0.1:9', "
            "region: us-east-1}}\n", needs="aws"),
    Mistake("no AWS credentials", 2, r"error: .*no AWS credentials found; set AWS_PROFILE",
            extra="backends: {storage: 's3://somebucket/x', endpoint_url: 'http://127.0.0.1:9', "
            "region: us-east-1}\n", needs="nocreds"),
    Mistake("an AWS profile that does not exist", 2,
            r"error: .*profile \(nosuch\) could not be found; set AWS_PROFILE to a profile",
            extra="backends: {storage: 's3://somebucket/x', region: us-east-1}\n",
            needs="noprofile"),
    # Slurm
    Mistake("executor slurm without sbatch on PATH", 2, r"error: .*sbatch is not on this machine",
            extra="backends: {executor: slurm}\n", needs="nopath"),
    Mistake("a Slurm partition that does not exist", 2,
            r"error: resources\.partition: Slurm has no partition 'gpu-huge'",
            extra="backends: {executor: slurm}\nresources: {partition: gpu-huge}\n",
            needs="slurm"),
]  # fmt: skip


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_a_newcomer_s_mistake_ends_fast_with_one_clear_line(
    mistake: Mistake, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    extra = mistake.extra
    if mistake.needs == "aws":
        endpoint = request.getfixturevalue("moto_server")
        extra = extra.format(endpoint=endpoint)
    elif mistake.needs == "slurm":
        request.getfixturevalue("slurm_cluster")
    elif mistake.needs == "nopath":
        env["PATH"] = str(tmp_path)  # nothing on it: no sbatch
    elif mistake.needs == "noprofile":
        env.update(AWS_PROFILE="nosuch", AWS_CONFIG_FILE="/dev/null")
    elif mistake.needs == "nocreds":
        env.update(
            AWS_ACCESS_KEY_ID="",
            AWS_SECRET_ACCESS_KEY="",
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
            AWS_EC2_METADATA_DISABLED="true",
        )
    write_jsonl(tmp_path / "in.jsonl", 100, seed=3)
    (tmp_path / "handler.py").write_text(GOOD)
    (tmp_path / "job.yaml").write_text(JOB.format(handler=mistake.handler, extra=extra))
    for name, text in mistake.files.items():
        (tmp_path / name).write_text(text)

    started = time.monotonic()
    proc = shardflow([mistake.command, "job.yaml"], tmp_path, env=env, timeout=60)
    took = time.monotonic() - started

    said = proc.stdout + proc.stderr
    assert proc.returncode == mistake.code, said[-3000:]
    assert took < 10, f"took {took:.1f}s"
    assert "Traceback" not in said, said[-3000:]
    lines = [line for line in said.splitlines() if re.search(mistake.says, line)]
    assert lines, f"no line matches {mistake.says!r}:\n{said[-3000:]}"
    state = tmp_path / ".shardflow" / "state.db"
    if state.exists():
        live = [j for j in SqliteStateStore(state).list_jobs() if j.status in LIVE]
        assert live == [], live
