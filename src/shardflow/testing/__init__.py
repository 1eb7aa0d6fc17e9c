"""Helpers for testing shardflow jobs and handlers, shipped with the package.

- :mod:`shardflow.testing.synthetic`: seeded JSONL/CSV inputs with known malformed and
  duplicate lines (tests, examples, benchmarks; ``scripts/generate-data``).
- :mod:`shardflow.testing.invariants`: checks a finished job's output against DESIGN.md's
  invariants.

Nothing is imported here, so ``import shardflow.testing`` stays cheap.
"""
