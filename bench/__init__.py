"""Benchmarks, each scenario against its floor: `python -m bench` (or `make bench`)
runs them all, `python -m bench --quick` a smaller version. Results: bench/RESULTS.md."""
