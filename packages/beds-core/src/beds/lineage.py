"""Event identifiers: ``"{node}.{env}.{guid}"`` with parent and depth (SPEC, event lineage)."""

from __future__ import annotations

import uuid

__all__ = ("new_event_id",)


def new_event_id(node: str, env: str) -> str:
    """Return a new event id made on ``node`` in environment ``env``."""
    return f"{node}.{env}.{uuid.uuid4().hex}"
