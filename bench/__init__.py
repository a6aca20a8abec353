"""Benchmark scripts for prefork_waitress (see bench/README.md)."""
