"""shardflow's benchmark suite: one script per workload, each printing its table.

Run one with ``python -m benchmarks.<name> --size tiny|small|full [--json]`` from the
repository root, or all of them with ``python -m benchmarks.run_all``. Benchmarks measure
and print; the test suite only checks that they run (tests/unit/test_benchmarks_run.py).
"""
