"""Fixtures of the hostile wire suite: ``beds run`` nodes, each in an environment of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hostile.wire import forget_env, ready
from tests.integration.nodes import Served, Stores, launch_served, stop_served, stores

__all__ = ("hostile_node", "serve", "stores")


@pytest.fixture(scope="module")
def hostile_node(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, stores: Stores
) -> Iterator[Served]:
    """One ``beds run`` (2 tasks per broker: prefetch 4) shared by a module's tests; its
    environment's queues and exchanges are deleted afterwards."""
    served = launch_served(tmp_path_factory.mktemp("hostile"), amqp_url, stores, instances=2)
    try:
        asyncio.run(ready(served, amqp_url))
        yield served
    finally:
        stop_served(served)
        asyncio.run(forget_env(amqp_url, served.env))


@pytest.fixture
async def serve(
    tmp_path: Path, amqp_url: str, stores: Stores
) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """``await serve(instances=8)``: a ready ``beds run`` in a fresh environment, stopped and
    its environment deleted after the test."""
    started: list[Served] = []

    async def start(**options: Any) -> Served:
        served = launch_served(tmp_path, amqp_url, stores, **options)
        started.append(served)
        await ready(served, amqp_url)
        return served

    yield start
    for served in started:
        stop_served(served)
        await forget_env(amqp_url, served.env)
