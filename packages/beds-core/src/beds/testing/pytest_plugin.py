"""pytest fixtures for BEDS and plugin authors (registered through the pytest11 entry point)."""
