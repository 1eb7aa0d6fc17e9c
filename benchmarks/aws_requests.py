"""Workload 6, AWS request counts: the quickstart job on moto (S3, DynamoDB, SQS).

A moto server runs in this process behind a counting WSGI layer, so every request from
every process (the CLI, its worker slots) is counted where it arrives, by service and
operation, with its request and response sizes. The job is examples/quickstart/job.yaml
with its input on S3, storage on S3, state on DynamoDB and the queue on SQS, run as
``shardflow submit`` then ``shardflow run`` (the same job id), so the submit's requests
are told apart from the map and aggregation's.

The job runs at the quickstart's batching (250 records: 9 tasks) and, except at tiny, at
50 records (41 tasks): the difference gives the marginal requests per task, and the
projection for 10,000 tasks is fixed + 10,000 × marginal, priced at public us-east-1
rates. DynamoDB request units are estimated from sizes (writes: 1 unit per started KB
of the request body per item, ×2 in a transaction; strongly consistent reads: 1 unit
per started 4 KB of the response), an upper bound since JSON framing counts.

Usage: ``python -m benchmarks.aws_requests --size tiny|small|full [--json]``
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from benchmarks.common import (
    REPO,
    bench_env,
    fresh_dir,
    last_json_line,
    parse_args,
    run_measured,
    shardflow_argv,
)
from benchmarks.report import (
    Report,
    Table,
    emit,
)

QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"
DATA = REPO / "examples" / "quickstart" / "data" / "users.jsonl.gz"
BATCHINGS = {"tiny": (250,), "small": (250, 50), "full": (250, 50)}
PROJECT_TASKS = 10_000
# public us-east-1 prices, USD
PRICE = {
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET, HEAD and the rest (DELETE is free)
    "ddb_write": 1.25 / 1e6,  # on-demand write request unit
    "ddb_read": 0.25 / 1e6,  # on-demand read request unit
    "sqs": 0.40 / 1e6,  # per request (64 KB chunk)
}
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@dataclass
class Tally:
    """Requests by (service, operation), and estimated billing units by price class."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def service(self, name: str) -> int:
        return sum(n for (svc, _), n in self.requests.items() if svc == name)


class CountingApp:
    """WSGI middleware: count each request by service and operation, then pass it on."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.tally = Tally()

    def reset(self) -> Tally:
        with self.lock:
            tally, self.tally = self.tally, Tally()
        return tally

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        import io

        service = _service(environ)
        body = b""
        if service in ("dynamodb", "sqs"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        op = _operation(service, environ, body)
        chunks = list(self.app(environ, start_response))
        size = sum(len(c) for c in chunks)
        with self.lock:
            self.tally.requests[(service, op)] += 1
            for unit, n in _units(service, op, body, size, environ).items():
                self.tally.units[unit] += n
        return chunks


def _service(environ: dict[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 4:
            return str(scope[3])
    return "other"


def _operation(service: str, environ: dict[str, Any], body: bytes) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return str(target).rsplit(".", 1)[-1]
    if service == "sqs":
        return parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
    if service != "s3":
        return "?"
    method = environ["REQUEST_METHOD"]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    has_key = environ.get("PATH_INFO", "/").strip("/").count("/") >= 1
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
            return "CopyObject"
        return "PutObject" if has_key else "PutBucket" + "".join(k.title() for k in query)
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "Post"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if has_key:
        return "GetObject"
    return "ListObjectsV2" if "list-type" in query else "GetBucket"


_S3_PUT_CLASS = ("Put", "Copy", "Post", "List", "Upload", "Create", "Complete", "DeleteObjects")
_DDB_WRITES = ("PutItem", "UpdateItem", "DeleteItem")
_DDB_READS = ("GetItem", "Query", "Scan", "BatchGetItem")


def _units(
    service: str, op: str, body: bytes, response: int, environ: dict[str, Any]
) -> dict[str, float]:
    if service == "s3":
        if op in ("DeleteObject", "AbortMultipartUpload"):
            return {}
        return {"s3_put" if op.startswith(_S3_PUT_CLASS) else "s3_get": 1}
    if service == "sqs":
        return {"sqs": max(1, math.ceil(len(body) / 65536))}
    if service != "dynamodb":
        return {}
    if op in _DDB_WRITES:
        return {"ddb_write": max(1, math.ceil(len(body) / 1024))}
    if op in ("BatchWriteItem", "TransactWriteItems"):
        request = json.loads(body or b"{}")
        items = (
            (request.get("TransactItems") or [])
            if op == "TransactWriteItems"
            else [r for reqs in (request.get("RequestItems") or {}).values() for r in reqs]
        )
        per_item = max(1, math.ceil(len(body) / max(len(items), 1) / 1024))
        factor = 2 if op == "TransactWriteItems" else 1
        return {"ddb_write": factor * per_item * max(len(items), 1)}
    if op in _DDB_READS:
        consistent = b'"ConsistentRead": true' in body or b'"ConsistentRead":true' in body
        units = max(1, math.ceil(response / 4096))
        return {"ddb_read": units if consistent else units / 2}
    return {}


def _serialise_moto() -> None:
    """One DynamoDB or S3 request at a time: moto's backends take no locks, and AWS applies
    each conditional write atomically (see tests/plugins/moto.py)."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.s3.responses import S3Response

    lock = threading.RLock()

    def locked(handler: Any) -> Any:
        @functools.wraps(handler)
        def serialised(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return handler(*args, **kwargs)

        return serialised

    DynamoHandler._dispatch = locked(DynamoHandler._dispatch)  # type: ignore[method-assign]
    for name in ("ambiguous_response", "bucket_response", "key_response"):
        setattr(S3Response, name, locked(getattr(S3Response, name)))


def start_moto() -> tuple[Any, CountingApp, str]:
    import logging

    from moto.server import (  # type: ignore[attr-defined]
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    _serialise_moto()
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    return server, app, f"http://{host}:{port}"


def run_quickstart(
    endpoint: str, app: CountingApp, folder: Path, batch: int, name: str
) -> tuple[int, dict[str, Tally]]:
    """Submit then run the quickstart on AWS backends; (tasks, tally per step)."""
    from shardflow.aws import AwsSettings, dynamodb_client, s3_client
    from shardflow.statestore.dynamodb_schema import create_table_if_missing

    settings = AwsSettings(region="us-east-1", endpoint_url=endpoint)
    s3 = s3_client(settings)
    s3.create_bucket(Bucket=name)
    s3.upload_file(str(DATA), name, "inputs/users.jsonl.gz")
    create_table_if_missing(dynamodb_client(settings), name)
    sets = [
        f"input.path=s3://{name}/inputs/users.jsonl.gz",
        f"backends.storage=s3://{name}/shardflow",
        f"backends.state=dynamodb://{name}?region=us-east-1",
        f"backends.queue=sqs://{name}",
        f"backends.endpoint_url={endpoint}",
        "backends.region=us-east-1",
        f"batching.records={batch}",
    ]
    args = [a for s in sets for a in ("--set", s)]
    env = {**bench_env(), **FAKE_ENV}
    app.reset()
    tallies: dict[str, Tally] = {}
    for step in ("submit", "run"):
        m = run_measured(
            shardflow_argv(step, str(QUICKSTART), "--job-id", "qs", "--json", *args),
            cwd=folder,
            env=env,
            timeout=600,
        ).check(f"shardflow {step} on moto")
        tallies[step] = app.reset()
        summary = last_json_line(m.stdout)
    if summary["status"] != "SUCCEEDED":
        raise RuntimeError(f"quickstart on moto ended {summary['status']}")
    return int(summary["tasks"]["total"]), tallies


def merged(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.requests.update(t.requests)
        for unit, n in t.units.items():
            out.units[unit] += n
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv)
    for name, value in FAKE_ENV.items():
        os.environ[name] = value  # this process's own setup calls need them too
    server, app, endpoint = start_moto()
    results: dict[int, tuple[int, dict[str, Tally]]] = {}
    try:
        for batch in BATCHINGS[args.size]:
            reps = []
            for rep in range(args.repeat):
                folder = fresh_dir(args.workdir, f"aws-{batch}-{rep}")
                reps.append(run_quickstart(endpoint, app, folder, batch, f"sfb-{batch}-{rep}"))
            results[batch] = (reps[0][0], median_tallies([r[1] for r in reps]))
            print(f"aws_requests: batching {batch} done", file=sys.stderr)
    finally:
        server.shutdown()
    report = build_report(args.size, args.repeat, results)
    emit(report, args.json)
    return 0


def median_tallies(reps: list[dict[str, Tally]]) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for step in reps[0]:
        tally = Tally()
        keys = set().union(*(r[step].requests for r in reps))
        for key in keys:
            tally.requests[key] = round(statistics.median(r[step].requests[key] for r in reps))
        units = set().union(*(r[step].units for r in reps))
        for unit in units:
            tally.units[unit] = statistics.median(r[step].units[unit] for r in reps)
        out[step] = tally
    return out


def _ops(tally: Tally) -> Iterator[tuple[str, str, int]]:
    for (svc, op), n in sorted(tally.requests.items()):
        yield svc, op, n


def build_report(
    size: str, repeat: int, results: dict[int, tuple[int, dict[str, Tally]]]
) -> Report:
    first = min(results, key=lambda b: results[b][0])
    tasks1, steps1 = results[first]
    total1 = merged(steps1.values())
    by_op = Table(
        f"requests of the quickstart job ({tasks1} tasks) by operation",
        ["service", "operation", "submit", "run", "total", "per task"],
    )
    for svc, op, n in _ops(total1):
        by_op.rows.append(
            [
                svc,
                op,
                steps1["submit"].requests[(svc, op)],
                steps1["run"].requests[(svc, op)],
                n,
                n / tasks1,
            ]
        )
    per_task = Table(
        "requests per task by service",
        ["tasks", "S3", "DynamoDB", "SQS", "S3 per task", "DynamoDB per task", "SQS per task"],
    )
    for _batch, (tasks, steps) in sorted(results.items(), key=lambda kv: kv[1][0]):
        t = merged(steps.values())
        s3, ddb, sqs = t.service("s3"), t.service("dynamodb"), t.service("sqs")
        per_task.rows.append([tasks, s3, ddb, sqs, s3 / tasks, ddb / tasks, sqs / tasks])
    units1 = total1.units
    if len(results) > 1:
        last = max(results, key=lambda b: results[b][0])
        tasks2, steps2 = results[last]
        units2 = merged(steps2.values()).units
        slope = {u: (units2[u] - units1[u]) / (tasks2 - tasks1) for u in PRICE}
        fixed = {u: max(0.0, units1[u] - slope[u] * tasks1) for u in PRICE}
        how = f"fit through the runs of {tasks1} and {tasks2} tasks"
    else:
        slope = {u: units1[u] / tasks1 for u in PRICE}
        fixed = dict.fromkeys(PRICE, 0.0)
        how = f"the {tasks1}-task run's average per task (no fit at this size)"
    bill = Table(
        f"projected request bill for {PROJECT_TASKS:,} tasks (us-east-1; {how})",
        ["price class", "fixed units", "units per task", f"units for {PROJECT_TASKS:,}", "USD"],
    )
    total_usd = 0.0
    for unit, price in PRICE.items():
        projected = fixed[unit] + slope[unit] * PROJECT_TASKS
        usd = projected * price
        total_usd += usd
        bill.rows.append([unit, fixed[unit], slope[unit], projected, round(usd, 4)])
    bill.rows.append(["total", None, None, None, round(total_usd, 4)])
    bill.notes.append(
        "S3 PUT/COPY/POST/LIST $0.005 per 1,000, GET/HEAD $0.0004 per 1,000, DELETE free; "
        "DynamoDB on-demand $1.25 per million write units, $0.25 per million read units "
        "(units estimated from sizes, an upper bound); SQS $0.40 per million requests."
    )
    bill.notes.append(
        "polling (the coordinator's reconcile loop, empty queue receives) scales with wall "
        "time, not tasks: a longer job with more slots polls more."
    )
    data = {
        "tasks": {b: r[0] for b, r in results.items()},
        "usd_10k": total_usd,
        "per_task_units": slope,
        "fixed_units": fixed,
    }
    return Report(
        name="aws_requests",
        title="6. AWS request counts: the quickstart job on moto (S3, DynamoDB, SQS)",
        size=size,
        repeat=repeat,
        tables=[per_task, by_op, bill],
        data=data,
    )


if __name__ == "__main__":
    sys.exit(main())
