"""Helpers shared by the tests (and the benchmarks): plain functions and values, no fixtures."""
