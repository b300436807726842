"""Benchmark suite for otel-pg-exporter (see ``python -m bench --help`` and the README)."""
