"""Helpers of the fault-injection tests (their fixtures are in ``conftest.py``).

The ``beds run`` helpers (``client_of``, ``wait_ready``, ``stored_posts``…) are in
``tests/integration/nodes.py``; import them from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.integration.faults.proxy import FaultProxy

__all__ = ("ProxyFactory",)

ProxyFactory = Callable[[str, int], Awaitable[FaultProxy]]
"""The ``tcp_proxy`` fixture: ``await tcp_proxy(host, port)`` gives a started proxy."""
