"""Fixtures of the CALGON end-to-end tests: private databases, ``beds run`` nodes, an admin node.

Every test gets its own MariaDB database and MongoDB database with the schema applied as an
operator applies it (``beds schema apply``), dropped after it: the ticket store then holds only
the test's tickets (a worker claims any waiting ticket of its store, whatever test submitted
it), and a direct count sees only the test's rows. ``stores`` is that pair here, so
``start_served`` (tests/integration/nodes.py) starts nodes on it. Helpers are in ``helpers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pymongo import MongoClient

from beds.testing import unique_name
from tests.integration.calgon.helpers import StartAdmin, install_slow_plugin, launch_admin
from tests.integration.nodes import (
    Served,
    Stores,
    beds_command,
    node_config,
    start_served,
    stop_served,
)

__all__ = ("start_served",)  # a fixture defined in tests/integration/nodes.py


@pytest.fixture
def stores(
    tmp_path: Path,
    amqp_url: str,
    mariadb_url: str,
    mariadb_sql: Callable[[str], None],
    mongo_server_uri: str,
) -> Iterator[Stores]:
    """A MariaDB and a MongoDB database of this test only, after ``beds schema apply``."""
    name = unique_name("beds_calgon")
    parts = urlsplit(mariadb_url)
    private = Stores(
        urlunsplit((parts.scheme, parts.netloc, "/" + name, "", "")), mongo_server_uri, name
    )
    mariadb_sql(f"CREATE DATABASE `{name}`")
    try:
        config = tmp_path / "schema.toml"
        config.write_text(
            node_config(
                amqp_url,
                env=unique_name("schema"),
                rel_url=private.rel_url,
                mongo_uri=private.mongo_uri,
                mongo_database=private.mongo_database,
            ),
            encoding="utf-8",
        )
        result = beds_command("schema", "apply", "--config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        yield private
    finally:
        mariadb_sql(f"DROP DATABASE IF EXISTS `{name}`")
        client: MongoClient[dict[str, object]] = MongoClient(mongo_server_uri)
        try:
            client.drop_database(name)
        finally:
            client.close()


@pytest.fixture
def slow_plugin(tmp_path: Path) -> dict[str, str]:
    """The environment of a node that serves ``slow_count`` too (its plugin on PYTHONPATH)."""
    return {"PYTHONPATH": str(install_slow_plugin(tmp_path / "slow-plugin"))}


@pytest.fixture
def start_admin() -> Iterator[StartAdmin]:
    """``start_admin(served)``: an admin node of ``served``'s environment, killed at teardown."""
    started: list[Served] = []

    def start(served: Served) -> Served:
        admin = launch_admin(served)
        started.append(admin)
        return admin

    yield start
    for admin in started:
        stop_served(admin)
