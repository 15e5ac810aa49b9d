"""Fake upstream servers for the gateway tests and benchmarks."""
