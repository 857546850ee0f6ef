"""Helpers for testing BEDS and BEDS plugins: an in-memory adapter and pytest fixtures."""

from beds.testing.memory import MemoryAdapter as MemoryAdapter

__all__ = ("MemoryAdapter", "unique_name")


def unique_name(prefix: str) -> str:
    """Return ``prefix`` plus a random suffix: names no other test or test run uses."""
    import uuid

    return f"{prefix}_{uuid.uuid4().hex[:12]}"
