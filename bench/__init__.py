"""Benchmarks: each prints what it measured and writes JSON; none passes or fails on time."""
