"""Benchmarks behind ``make bench``: measured ratios on one machine, written to docs/benchmarks.md."""
