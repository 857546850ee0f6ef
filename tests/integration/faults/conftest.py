"""Fault injection against the real services: the example schema, a TCP proxy, figures.

Each test records its figures (requests sent, answered, failed by code, retried, lost) with the
``figures`` fixture of ``tests/conftest.py``; the run's terminal summary repeats them. Tests
import their helpers from ``tests/integration/nodes.py`` and ``helpers.py``, never from here.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from loguru import logger

from tests.integration.faults.helpers import ProxyFactory
from tests.integration.faults.proxy import FaultProxy
from tests.integration.nodes import start_served, stores

__all__ = ("start_served", "stores")  # fixtures defined in tests/integration/nodes.py


@pytest.fixture
async def tcp_proxy() -> AsyncIterator[ProxyFactory]:
    """``await tcp_proxy(host, port)``: a started :class:`FaultProxy`, closed after the test."""
    proxies: list[FaultProxy] = []

    async def make(host: str, port: int) -> FaultProxy:
        proxy = FaultProxy(host, port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.aclose()


@pytest.fixture(autouse=True)
def beds_log_on_failure() -> Iterator[None]:
    """Show the in-process node's warnings and errors in a failing test's captured stderr."""
    logger.enable("beds")

    def write(message: object) -> None:
        sys.stderr.write(str(message))  # the current stderr: pytest swaps it per test

    sink = logger.add(write, level="ERROR")
    yield
    logger.remove(sink)
    logger.disable("beds")
