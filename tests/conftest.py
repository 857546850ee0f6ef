"""Service fixtures for the cross-package integration and end-to-end tests.

Services come from the environment, with this machine's defaults:

* ``BEDS_TEST_AMQP_URL``     amqp://guest:guest@127.0.0.1:5672/  (a fresh vhost per session)
* ``BEDS_TEST_MARIADB_URL``  mysql://root@127.0.0.1:3306/        (a fresh database per session)
* ``BEDS_TEST_MONGO_URI``    a real mongod; else a SecantusDB server started for the session

A service that is down fails the run with the command that starts it; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from beds.testing import unique_name as unique
from tests.helpers import Accounts, Figures

if TYPE_CHECKING:
    from collections.abc import Iterator

AMQP_URL = os.environ.get("BEDS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MARIADB_URL = os.environ.get("BEDS_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
MONGO_URI = os.environ.get("BEDS_TEST_MONGO_URI", "")

_START = {
    "RabbitMQ": "rabbitmq-server -detached",
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if root in path.parents:
            item.add_marker(pytest.mark.integration)
            if "e2e" in path.parts:
                item.add_marker(pytest.mark.e2e)


def _require_port(service: str, url: str, default_port: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"{service} is not reachable at {host}:{port} ({exc}). "
            f"Start it with: {_START.get(service, 'see README')}",
            pytrace=False,
        )


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """An AMQP URL on a vhost created for this test session and deleted after it."""
    _require_port("RabbitMQ", AMQP_URL, 5672)
    vhost = unique("beds-test")
    user = urlsplit(AMQP_URL).username or "guest"
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail("rabbitmqctl is needed to create the test vhost", pytrace=False)
    subprocess.run([ctl, "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield _with_path(AMQP_URL, "/" + vhost)
    finally:
        subprocess.run([ctl, "-q", "delete_vhost", vhost], check=False, capture_output=True)


@pytest.fixture(scope="session")
def production_accounts(amqp_url: str, mariadb_url: str) -> Iterator[Accounts]:
    """A RabbitMQ user on the session's vhost and a MariaDB account, each with a password,
    deleted after the session: production refuses ``guest`` and passwordless databases."""
    import secrets

    accounts = Accounts(
        amqp_user=unique("beds_prod"),
        amqp_password=secrets.token_hex(12),
        sql_user=unique("beds_prod")[:32],
        sql_password=secrets.token_hex(12),
    )
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None  # amqp_url required it
    vhost = urlsplit(amqp_url).path.lstrip("/")
    subprocess.run(
        [ctl, "-q", "add_user", accounts.amqp_user, accounts.amqp_password],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [ctl, "-q", "set_permissions", "-p", vhost, accounts.amqp_user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    account = f"'{accounts.sql_user}'@'127.0.0.1'"
    run_sql(MARIADB_URL, f"CREATE USER {account} IDENTIFIED BY '{accounts.sql_password}'")
    run_sql(MARIADB_URL, f"GRANT ALL PRIVILEGES ON *.* TO {account}")
    try:
        yield accounts
    finally:
        subprocess.run(
            [ctl, "-q", "delete_user", accounts.amqp_user], check=False, capture_output=True
        )
        run_sql(MARIADB_URL, f"DROP USER IF EXISTS {account}")


def run_sql(url: str, statement: str) -> None:
    """Run one statement on the MariaDB server of ``url`` (no database selected)."""
    import asyncio

    import asyncmy

    parts = urlsplit(url)

    async def run() -> None:
        conn = await asyncmy.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(statement)
        finally:
            conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def mariadb_sql() -> Callable[[str], None]:
    """Run a statement on the test MariaDB server, as a DBA would (for fault set-ups)."""
    return lambda statement: run_sql(MARIADB_URL, statement)


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A MariaDB URL on a database created for this test session and dropped after it."""
    _require_port("MariaDB", MARIADB_URL, 3306)
    database = unique("beds_test")
    run_sql(MARIADB_URL, f"CREATE DATABASE `{database}`")
    try:
        yield _with_path(MARIADB_URL, "/" + database)
    finally:
        run_sql(MARIADB_URL, f"DROP DATABASE IF EXISTS `{database}`")


@pytest.fixture(scope="session")
def mongo_server_uri() -> Iterator[str]:
    """A MongoDB wire server: ``BEDS_TEST_MONGO_URI``, else SecantusDB for this session."""
    if MONGO_URI:
        yield MONGO_URI
        return
    from secantus import SecantusDBServer

    storage = tempfile.mkdtemp(prefix="beds-secantus-")
    # Standalone: the replica-set oplog slows SecantusDB down after ~10,000 writes (SPEC).
    server = SecantusDBServer(storage_path=storage, replica_set_name=None)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture(scope="session")
def mongo_database(mongo_server_uri: str) -> Iterator[str]:
    """A database name for this session on the MongoDB wire server, dropped after it."""
    from pymongo import MongoClient

    name = unique("beds_test")
    yield name
    client: MongoClient[dict[str, object]] = MongoClient(mongo_server_uri)
    try:
        client.drop_database(name)
    finally:
        client.close()


_FIGURES = pytest.StashKey[list[str]]()
"""The lines of every ``figures`` call of the run, for the terminal summary."""


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
