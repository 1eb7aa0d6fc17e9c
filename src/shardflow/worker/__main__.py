"""The worker entry point every executor runs: ``python -m shardflow.worker``.

A slot loops: receive a task id from the job's queue, lease the task, run the attempt,
until the queue is empty, the job is paused or cancelled, or a stop signal arrives
(SIGTERM on preemption, SIGINT on Ctrl-C): then the current item finishes, progress
is checkpointed, the lease is released and the process exits 0 so the task is retried.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from pathlib import Path

from shardflow.worker.slot import SlotOptions, run_slot


def parse_args(argv: list[str] | None) -> SlotOptions:
    parser = argparse.ArgumentParser(prog="python -m shardflow.worker")
    parser.add_argument("--state", required=True, help="state store URL")
    parser.add_argument("--job", required=True, help="job id")
    parser.add_argument("--workspace", required=True, type=Path, help="local workspace folder")
    parser.add_argument("--slot", default=os.environ.get("SHARDFLOW_SLOT"))
    parser.add_argument("--endpoint-url", default=os.environ.get("SHARDFLOW_ENDPOINT_URL"))
    parser.add_argument("--region", default=os.environ.get("SHARDFLOW_REGION"))
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    slot = args.slot or f"{socket.gethostname()}-{os.getpid()}"
    return SlotOptions(
        state_url=args.state,
        job_id=args.job,
        workspace=args.workspace,
        slot=slot,
        endpoint_url=args.endpoint_url,
        region=args.region,
        idle_timeout=args.idle_timeout,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    os.umask(0o077)  # checkpoints, results and logs private, as the CLI's (cli/main.py)

    def request_stop(signum: int, frame: object) -> None:
        options.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return run_slot(options)


if __name__ == "__main__":
    sys.exit(main())
