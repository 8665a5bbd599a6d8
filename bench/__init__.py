"""Benchmarks, one module per benchmark (run with python -m bench.<name>)."""
