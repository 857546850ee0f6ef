"""Server sides of the benchmark scenarios; each runs as its own process."""
