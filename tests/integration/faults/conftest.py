"""Fault injection against the real services: the example schema, a TCP proxy, figures.

Each test records its figures (requests sent, answered, failed by code, retried, lost) with
``record_property`` and prints them; the run's terminal summary repeats them, one line per test,
under "fault injection figures".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from loguru import logger

from beds.testing import unique_name

from .proxy import FaultProxy

_FIGURES = pytest.StashKey[list[str]]()


@attrs.frozen
class Stores:
    """The session's databases, with the example schema applied."""

    rel_url: str
    """``mysql://root@host:port/database`` of the session's MariaDB database."""
    mongo_uri: str
    mongo_database: str

    @property
    def rel_database(self) -> str:
        return urlsplit(self.rel_url).path.lstrip("/")


def node_config(
    amqp_url: str,
    *,
    env: str,
    rel_url: str,
    mongo_uri: str,
    mongo_database: str,
    name: str = "n1",
    instances: int = 4,
    drain_seconds: float = 5,
    extra: str = "",
) -> str:
    """A node of the appServer role with its own exchanges (one vhost holds many test envs)."""
    return f"""
schema_version = 1

[node]
name = "{name}"
env = "{env}"
drain_seconds = {drain_seconds}

[log]
level = "INFO"

[telemetry]
port = 0

[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"

[stores.rel]
url = "{rel_url}"
connect_timeout = 1

[stores.rec]
uri = "{mongo_uri}"
database = "{mongo_database}"
server_selection_timeout = 0.5

[roles.appServer.brokers.rBroker]
instances = {instances}

[roles.appServer.brokers.wBroker]
instances = {instances}

[roles.appServer.brokers.mBroker]
instances = 1
{extra}
"""


def beds_command(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the beds command in a subprocess, without the caller's BEDS_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "beds", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_environ(),
        check=False,
    )


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BEDS_")}


@pytest.fixture(scope="session")
def stores(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mongo_database: str,
) -> Stores:
    """The session's databases, after ``beds schema apply`` (as an operator runs it)."""
    applied = Stores(mariadb_url, mongo_server_uri, mongo_database)
    path = tmp_path_factory.mktemp("faults") / "schema.toml"
    path.write_text(
        node_config(
            amqp_url,
            env=unique_name("schema"),
            rel_url=applied.rel_url,
            mongo_uri=applied.mongo_uri,
            mongo_database=applied.mongo_database,
        ),
        encoding="utf-8",
    )
    result = beds_command("schema", "apply", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return applied


ProxyFactory = Callable[[str, int], Awaitable[FaultProxy]]


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


Figures = Callable[[dict[str, Any]], None]


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Figures:
    """Record a test's figures: a ``figures`` property, a printed line, the terminal summary."""

    def record(values: dict[str, Any]) -> None:
        line = f"{request.node.name}: " + " ".join(
            f"{key}={json.dumps(value, sort_keys=True)}" for key, value in values.items()
        )
        record_property("figures", values)
        request.config.stash.setdefault(_FIGURES, []).append(line)
        print(f"\nFAULT FIGURES {line}")

    return record


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("fault injection figures")
        for line in lines:
            terminalreporter.write_line(line)


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
