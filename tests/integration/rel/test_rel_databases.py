"""Several databases per node on the real MariaDB: a template picks its database by name.

Two private databases on the shared server, made for this module and dropped after it: ``main``
(``[stores.rel]``) and ``wh`` (``[stores.rel.databases.wh]``, every other key inherited). Two
template packages declared here, one per database, each ship a procedure of the same name,
``dbw_here``, that answers its own database's name: ``beds schema apply`` installs each
package's file in its own database, a node serves both templates and each reads its own, and
``beds check`` reports an object missing from the named database by its name and the database.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pluggy
import pytest
from click.testing import CliRunner

import beds_rel.plugin
from beds import hookimpl
from beds.cli import cli
from beds.config import Config, load_config
from beds.namaste import SchemaFile
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template
from beds.testing import unique_name
from tests.helpers import client_of_node

pytestmark = pytest.mark.mariadb

TEMPLATE = """
name = "{name}"
store = "rel"
{database}
tla = "dbw"
key = ["place"]
[access]
fetch = ["*"]
[fields.place]
type = "str"
max_length = 20
[queries.here]
params = []
max_limit = 5
procedure = "{procedure}"
"""


def template(name: str, package: str, procedure: str = "dbw_here", database: str = "") -> Template:
    line = f'database = "{database}"' if database else ""
    text = TEMPLATE.format(name=name, database=line, procedure=procedure)
    return parse_template(text, source=f"{package}/templates/{name}.toml")


MAIN = template("dbw_main", "dbw_main_pkg")
WAREHOUSE = template("dbw_wh", "dbw_wh_pkg", database="wh")
LOST = template("dbw_lost", "dbw_wh_pkg", procedure="dbw_only_main", database="wh")
"""On ``wh``, calling a procedure only ``main`` has: missing from its own database."""


def procedures(place: str, *extra: str) -> str:
    made = [
        f"CREATE OR REPLACE PROCEDURE {name}(IN p_limit INT) READS SQL DATA "
        f"SELECT '{place}' AS place;"
        for name in ("dbw_here", *extra)
    ]
    return "\n".join(made)


SCHEMA = [
    SchemaFile(
        name="dbw_main_pkg/schema/rel/001_dbw.sql", text=procedures("main", "dbw_only_main")
    ),
    SchemaFile(name="dbw_wh_pkg/schema/rel/001_dbw.sql", text=procedures("warehouse")),
]


class Packages:
    """The two template packages, and their schema files."""

    def __init__(self, *templates: Template) -> None:
        self.templates = templates

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        for declared in self.templates:
            registry.add(declared)
        registry.schema["rel"] = list(SCHEMA)


def plugins(*templates: Template) -> pluggy.PluginManager:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(beds_rel.plugin)
    pm.register(Packages(*templates))
    return pm


def server_of(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


class Databases:
    """The module's two databases, the node configuration that names them, and apply's output."""

    def __init__(self, folder: Path, amqp_url: str, server: str) -> None:
        self.main = unique_name("beds_dbw_main")[:60]
        self.wh = unique_name("beds_dbw_wh")[:60]
        self.server = server
        env = unique_name("dbw")
        self.path = folder / "beds.toml"
        self.path.write_text(
            f"""schema_version = 1
[node]
name = "t1"
env = "{env}"
drain_seconds = 1
[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
control_exchange = "beds.control.{env}"
[telemetry]
port = 0
[lineage]
enabled = false
[roles.appServer.brokers.rBroker]
instances = 1
[roles.appServer.brokers.wBroker]
instances = 1
[roles.appServer.brokers.mBroker]
instances = 1
[stores.rel]
url = "{server}/{self.main}"
connect_timeout = 3
pool_max = 2
[stores.rel.databases.wh]
url = "{server}/{self.wh}"
""",
            encoding="utf-8",
        )
        self.applied: list[str] = []

    def config(self) -> Config:
        return load_config(self.path, environ={})


@pytest.fixture(scope="module")
def databases(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_url: str,
    mariadb_url: str,
    mariadb_sql: Callable[[str], None],
) -> Iterator[Databases]:
    """Both databases, made empty, then filled by ``beds schema apply``; dropped afterwards."""
    made = Databases(tmp_path_factory.mktemp("dbw"), amqp_url, server_of(mariadb_url))
    for name in (made.main, made.wh):
        mariadb_sql(f"CREATE DATABASE `{name}`")
    try:
        with pytest.MonkeyPatch.context() as patch:
            pm = plugins(MAIN, WAREHOUSE, LOST)
            patch.setattr("beds.ipl.make_plugin_manager", lambda **_: pm)
            result = CliRunner().invoke(cli, ["schema", "apply", "--config", str(made.path)])
        assert result.exit_code == 0, result.output
        made.applied = result.stdout.splitlines()
        yield made
    finally:
        for name in (made.main, made.wh):
            mariadb_sql(f"DROP DATABASE IF EXISTS `{name}`")


def test_schema_apply_installs_each_packages_files_in_the_database_its_templates_use(
    databases: Databases,
) -> None:
    assert "applied rel: dbw_main_pkg/schema/rel/001_dbw.sql" in databases.applied
    assert "applied rel.wh: dbw_wh_pkg/schema/rel/001_dbw.sql" in databases.applied
    assert "applied rel: dbw_wh_pkg/schema/rel/001_dbw.sql" not in databases.applied
    assert "applied rel.wh: dbw_main_pkg/schema/rel/001_dbw.sql" not in databases.applied


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


async def test_each_template_reads_its_own_database(databases: Databases) -> None:
    async with (
        BedsNode(databases.config(), plugin_manager=plugins(MAIN, WAREHOUSE)) as node,
        client_of_node(node) as client,
    ):
        main = await client.fetch("dbw_main", "here", {})
        warehouse = await client.fetch("dbw_wh", "here", {})
        assert node.telemetry_url is not None
        metrics = await asyncio.to_thread(_scrape, node.telemetry_url + "/metrics")
    assert main == [{"place": "main"}]
    assert warehouse == [{"place": "warehouse"}]
    checks = {check.name: (check.status, check.detail) for check in node.checks}
    assert checks["store rel"] == ("ok", "")
    assert checks["store rel.wh"] == ("ok", "")
    assert checks["template dbw_main objects"] == ("ok", "")
    assert checks["template dbw_wh objects"] == ("ok", "database rel.wh")
    # Store latency is kept per connection: the named database may be another server.
    assert 'store="rel.wh"' in metrics
    assert 'store="rel"' in metrics


async def test_check_names_an_object_missing_from_the_named_database(
    databases: Databases,
) -> None:
    checks = await BedsNode(databases.config(), plugin_manager=plugins(MAIN, LOST)).check()
    found = {check.name: (check.status, check.detail) for check in checks}
    assert found["template dbw_main objects"] == ("ok", "")
    status, detail = found["template dbw_lost objects"]
    assert status == "warning"
    assert "dbw_only_main" in detail  # it exists, but in the default database only
    assert detail.endswith("(in database rel.wh)")


async def test_a_template_on_an_undeclared_database_is_not_served(databases: Databases) -> None:
    stray = template("dbw_stray", "dbw_wh_pkg", database="archive")
    checks = await BedsNode(databases.config(), plugin_manager=plugins(MAIN, stray)).check()
    found = {check.name: (check.status, check.detail) for check in checks}
    status, detail = found["template dbw_stray"]
    assert status == "warning"
    assert "uses database 'archive' of store 'rel'" in detail
    assert "stores.rel.databases" in detail
    assert "template dbw_stray objects" not in found
    assert found["template dbw_main objects"] == ("ok", "")
