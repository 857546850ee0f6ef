"""``beds run`` subprocesses against the session's services, shared by integration folders.

Fixtures (``stores``, ``start_served``) are defined here and registered by each folder's
``conftest.py``, which imports them; tests import the helpers (``client_of``, ``wait_ready``,
``stored_posts``…) from this module, never from a conftest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import attrs
import pytest

from beds.client import BedsClient
from beds.errors import BedsError
from beds.testing import unique_name
from tests.helpers import operator_token

__all__ = (
    "Served",
    "StartServed",
    "Stores",
    "beds_command",
    "clean_environ",
    "client_of",
    "dba_connect",
    "launch_served",
    "node_config",
    "start_served",
    "stop_served",
    "stored_posts",
    "stores",
    "wait_exit",
    "wait_ready",
)


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


@attrs.define
class Served:
    """A ``beds run`` subprocess and what a test needs to talk to its environment."""

    process: subprocess.Popen[bytes]
    config: Path
    log: Path
    env: str

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


StartServed = Callable[..., Served]


def launch_served(
    folder: Path,
    amqp_url: str,
    stores: Stores,
    *,
    env: str | None = None,
    name: str = "n1",
    drain_seconds: float = 5,
    instances: int = 2,
    extra: str = "",
    environ: dict[str, str] | None = None,
) -> Served:
    """Start ``beds run`` serving the appServer role of ``env`` (fresh unless given).

    Its config and log are written in ``folder``; the caller stops it (:func:`stop_served`).
    """
    env = env or unique_name("served")
    config = folder / f"{env}-{name}.toml"
    config.write_text(
        node_config(
            amqp_url,
            env=env,
            name=name,
            rel_url=stores.rel_url,
            mongo_uri=stores.mongo_uri,
            mongo_database=stores.mongo_database,
            instances=instances,
            drain_seconds=drain_seconds,
            extra=extra,
        ),
        encoding="utf-8",
    )
    log = config.with_suffix(".log")
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean_environ(), **(environ or {})},
        )
    return Served(process, config, log, env)


def stop_served(served: Served) -> None:
    """Kill the node if it still runs, and reap it."""
    if served.process.poll() is None:
        served.process.kill()
    served.process.wait(timeout=30)


@pytest.fixture
def start_served(tmp_path: Path, amqp_url: str, stores: Stores) -> Iterator[StartServed]:
    """``start_served(env=None, name="n1", drain_seconds=5, instances=2)``: a ``beds run``.

    ``extra`` is appended to the node's config; ``environ`` adds environment variables (for
    example ``PYTHONPATH`` to a folder holding a test plugin).

    Each call starts a subprocess serving the appServer role of ``env`` (a fresh environment
    unless given: nodes of one environment compete for its queues); all are killed at teardown.
    """
    started: list[Served] = []

    def start(**options: Any) -> Served:
        served = launch_served(tmp_path, amqp_url, stores, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        stop_served(served)


def client_of(served: Served, amqp_url: str, *, timeout: float = 30.0) -> BedsClient:
    """A client of the served node's environment (not yet connected)."""
    return BedsClient(
        amqp_url,
        exchange=f"beds.events.{served.env}",
        env=served.env,
        origin="load",
        timeout=timeout,
        token=operator_token(served.env),
    )


async def wait_ready(served: Served, client: BedsClient, seconds: float = 30) -> None:
    """Until the node answers a ping (its topology is declared and its brokers consume)."""
    deadline = time.monotonic() + seconds
    while True:
        if served.process.poll() is not None:
            pytest.fail(f"beds run exited early:\n{served.output()}", pytrace=False)
        with contextlib.suppress(BedsError):
            if (await client.ping(timeout=1)).ok:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"beds run was not ready in {seconds} s:\n{served.output()}")
        await asyncio.sleep(0.2)


async def wait_exit(process: subprocess.Popen[bytes], seconds: float) -> float:
    """Wait (without blocking the loop) for the process to exit; return how long it took."""
    started = time.monotonic()
    while process.poll() is None:
        if time.monotonic() - started > seconds:
            return float("inf")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def dba_connect(stores: Stores) -> Any:
    """A connection to the session's MariaDB database, as the DBA has one (no BEDS between)."""
    return await dba_connect_url(stores.rel_url, database=stores.rel_database)


async def dba_connect_url(
    url: str, *, database: str | None = None, autocommit: bool = False
) -> Any:
    """A connection to the database of a ``mysql://`` URL (or ``database``), as its DBA's."""
    parts = urlsplit(url)
    return await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=database if database is not None else parts.path.lstrip("/"),
        autocommit=autocommit,
    )


async def stored_posts(stores: Stores, author: str) -> collections.Counter[tuple[int, str]]:
    """(id, body) of every post of ``author``, read from MariaDB directly (as the DBA would)."""
    conn = await dba_connect(stores)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT id, body FROM spp_posts WHERE author = %s", (author,))
            rows = await cursor.fetchall()
    finally:
        conn.close()
    return collections.Counter((int(row[0]), str(row[1])) for row in rows)
