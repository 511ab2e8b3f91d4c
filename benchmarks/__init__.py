"""The benchmark harness: ``python benchmarks/run.py`` (see README.md here)."""
