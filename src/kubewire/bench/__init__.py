"""Benchmarks: commands that measure side by side and write JSON (results in docs/benchmarks.md)."""
