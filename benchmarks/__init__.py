"""Benchmarks that print measured ratios; see docs/benchmarks.md."""
