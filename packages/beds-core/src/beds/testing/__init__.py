"""Helpers for testing BEDS and BEDS plugins: an in-memory adapter, principals, pytest fixtures.

The node's request path in-process is :class:`beds.testing.local.LocalNode` (imported from its
module: it loads the dispatcher, which the pytest plugin does not need).
"""

from beds.testing.auth import TestIdentity as TestIdentity
from beds.testing.memory import MemoryAdapter as MemoryAdapter

__all__ = ("MemoryAdapter", "TestIdentity", "unique_name")


def unique_name(prefix: str) -> str:
    """Return ``prefix`` plus a random suffix: names no other test or test run uses."""
    import uuid

    return f"{prefix}_{uuid.uuid4().hex[:12]}"
