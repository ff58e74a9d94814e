"""convotree's benchmarks: ``python -m benchmarks`` (or ``make bench``) prints the tables."""
