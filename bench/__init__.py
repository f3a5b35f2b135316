"""Benchmarks and the fuzz target (`make bench`, `make bench-quota`, `make fuzz`); not in `make test`."""
