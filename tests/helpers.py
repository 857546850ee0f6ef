"""Helpers shared by the integration and end-to-end tests (conftests hold fixtures only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beds.testing import TestIdentity

__all__ = ("Figures", "operator_token")

Figures = Callable[[dict[str, Any]], None]
"""The ``figures`` fixture (``tests/conftest.py``): record a test's figures."""


def operator_token(env: str) -> str:
    """A session token that the development nodes of ``env`` accept, of an admin member.

    Tests write to the example domain as this operator: an admin may create records for any
    author (the identity tests use members' tokens to test ownership).
    """
    return TestIdentity.development(env).token("tests", ("member", "admin"))
