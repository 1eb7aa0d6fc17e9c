"""Checking a finished job's real output against DESIGN.md's invariants.

Shipped with the package so users can check their own runs (and tests check ours):
:func:`read_job_output` verifies I4 (``_SUCCESS`` present, every manifest checksum
matches, nothing else under ``output/``) and returns the tables; :func:`check_invariants`
adds I1-I3 for a 1:1 handler given the input's expected counts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shardflow.layout import Layout
from shardflow.manifests import OutputManifest, decode_manifest, sha256_bytes
from shardflow.objectstore.base import ObjectStore

if TYPE_CHECKING:
    import pyarrow as pa


class InvariantViolation(AssertionError):
    pass


@dataclass(frozen=True)
class JobOutput:
    manifest: OutputManifest
    results: pa.Table
    failures: pa.Table
    rejects: pa.Table
    key_column: str

    def result_keys(self) -> list[str]:
        return [str(k) for k in self.results.column(self.key_column).to_pylist()]

    def failure_keys(self) -> list[str]:
        return [str(k) for k in self.failures.column("key").to_pylist()]


def _table(data: bytes, fmt: str) -> pa.Table:
    import io

    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt == "csv":
        return pcsv.read_csv(io.BytesIO(data))
    if fmt == "sqlite":
        import sqlite3
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".sqlite") as f:
            f.write(data)
            f.flush()
            db = sqlite3.connect(f.name)
            (name,) = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchone()
            cur = db.execute(f'SELECT * FROM "{name}"')
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
            db.close()
        return pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})
    raise ValueError(fmt)


def read_job_output(store: ObjectStore, job_id: str, key_column: str = "_key") -> JobOutput:
    """Read a job's published output, checking I4 on the way."""
    layout = Layout(job_id)
    if store.head(layout.output_success()) is None:
        raise InvariantViolation(f"I4: {layout.output_success()} is missing")
    manifest = decode_manifest(
        store.get_bytes(layout.output_manifest()), OutputManifest, name=layout.output_manifest()
    )
    expected = {f.key for f in manifest.files} | {
        layout.output_manifest(),
        layout.output_success(),
    }
    present = {info.key for info in store.list(layout.output_prefix())}
    if present != expected:
        raise InvariantViolation(
            f"I4: unexpected objects under output/: {sorted(present ^ expected)}"
        )
    tables: dict[str, pa.Table] = {}
    for f in manifest.files:
        data = store.get_bytes(f.key)
        if sha256_bytes(data) != f.sha256 or len(data) != f.size:
            raise InvariantViolation(f"I4: {f.key} does not match its manifest checksum")
        fmt = f.key.rsplit(".", 1)[-1]
        table = _table(data, fmt)
        if table.num_rows != f.rows:
            raise InvariantViolation(
                f"I4: {f.key} has {table.num_rows} rows, manifest says {f.rows}"
            )
        tables[f.key] = table
    results_key = manifest.files[0].key
    return JobOutput(
        manifest,
        tables[results_key],
        tables[layout.output("failures", "parquet")],
        tables[layout.output("rejects", "parquet")],
        key_column,
    )


def check_invariants(
    out: JobOutput,
    *,
    input_records: int,
    expected_rejects: int | None = None,
    expected_keys: set[str] | None = None,
) -> None:
    """I1-I3 for a handler that returns exactly one row per item.

    ``input_records`` counts every non-blank input line (malformed ones included).
    """
    keys = out.result_keys()
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise InvariantViolation(f"I2: keys appear twice in the output: {dup[:5]}")
    failed = out.failure_keys()
    both = set(keys) & set(failed)
    if both:
        raise InvariantViolation(f"I1: items both in output and failures: {sorted(both)[:5]}")
    if len(set(failed)) != len(failed):
        raise InvariantViolation("I1: an item has two failure records")
    total = len(keys) + len(failed) + out.rejects.num_rows
    if total != input_records:
        raise InvariantViolation(
            f"I3: {len(keys)} rows + {len(failed)} failures + {out.rejects.num_rows} rejects "
            f"= {total}, input has {input_records} records"
        )
    if expected_rejects is not None and out.rejects.num_rows != expected_rejects:
        raise InvariantViolation(f"I3: {out.rejects.num_rows} rejects, expected {expected_rejects}")
    lines = out.rejects.column("line").to_pylist()
    if any(line is None for line in lines):
        raise InvariantViolation("I3: a rejected line has no line number")
    if expected_keys is not None and set(keys) | set(failed) != expected_keys:
        missing = expected_keys - set(keys) - set(failed)
        raise InvariantViolation(
            f"I1: items with neither a row nor a failure: {sorted(missing)[:5]}"
        )
