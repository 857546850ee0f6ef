"""Apps a user might build instead of BEDS, for the benchmark's comparisons (never imported by
the project)."""
