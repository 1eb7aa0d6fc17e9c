"""Shared fixtures. Port-specific server fixtures live in tests/plugins/."""
