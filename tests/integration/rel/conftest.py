"""Fixtures of the REL integration tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for a module: hypothesis runs many examples on one module-scoped adapter."""
    running = asyncio.new_event_loop()
    yield running
    running.close()
