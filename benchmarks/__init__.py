"""The BEDS benchmark suite (``nox -s bench``); see docs/benchmarks.md."""
