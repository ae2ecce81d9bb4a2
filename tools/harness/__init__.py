"""Benchmark and soak tooling for dreamnet-healthd (standard library only)."""
