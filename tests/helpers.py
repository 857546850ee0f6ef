"""Helpers shared by the integration and end-to-end tests (conftests hold fixtures only)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import attrs

from beds.client import BedsClient
from beds.testing import TestIdentity

if TYPE_CHECKING:
    from beds.node import BedsNode

__all__ = (
    "Accounts",
    "Figures",
    "client_of_node",
    "operator_token",
    "until",
    "with_credentials",
)

Figures = Callable[[dict[str, Any]], None]
"""The ``figures`` fixture (``tests/conftest.py``): record a test's figures."""


@functools.cache
def operator_token(env: str) -> str:
    """A session token that the development nodes of ``env`` accept, of an admin member.

    Tests write to the example domain as this operator: an admin may create records for any
    author (the identity tests use members' tokens to test ownership). One per environment:
    the keys are read and a token signed once (each test has its own environment, and lasts
    far less than a token).
    """
    return TestIdentity.development(env).token("tests", ("member", "admin"))


def client_of_node(node: BedsNode, *, timeout: float = 5.0) -> BedsClient:
    """A client (not yet connected) of an in-process node's environment, as the operator."""
    config = node.config
    return BedsClient(
        config.amqp.url,
        exchange=config.amqp.events_exchange,
        env=config.node.env,
        timeout=timeout,
        token=operator_token(config.node.env),
    )


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` with ``password``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@attrs.frozen
class Accounts:
    """A RabbitMQ user and a MariaDB account with passwords, made for the test session: what
    the production policy asks for (``tests/conftest.py``, ``production_accounts``)."""

    amqp_user: str
    amqp_password: str
    sql_user: str
    sql_password: str

    def amqp(self, url: str) -> str:
        """``url`` as the session's RabbitMQ user."""
        return with_credentials(url, self.amqp_user, self.amqp_password)

    def rel(self, url: str) -> str:
        """``url`` as the session's MariaDB account."""
        return with_credentials(url, self.sql_user, self.sql_password)


async def until(
    condition: Callable[[], object], seconds: float = 5.0, *, what: str = "the condition"
) -> None:
    """Wait until ``condition()`` is true, polling; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come true within {seconds:g} s")
        await asyncio.sleep(0.02)
