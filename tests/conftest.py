"""Shared fixtures. Port-specific server fixtures live in tests/plugins/."""

pytest_plugins = ["tests.plugins.moto", "tests.plugins.slurm", "tests.plugins.coverage_gate"]
