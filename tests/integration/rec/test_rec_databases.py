"""Several databases per node on a MongoDB wire server: a REC template picks its database by name.

Two private databases on the session's server (SecantusDB, or ``BEDS_TEST_MONGO_URI``), made
for this module and dropped after it: ``main`` (``[stores.rec]``) and ``arch``
(``[stores.rec.databases.arch]``, which sets only ``database`` and inherits the URI). Each of
two template packages declared here ships the same collection, ``dbr_places``, and each
database holds a different document in it: ``beds schema apply`` creates each package's
collection in its own database, a node serves both templates and each reads its own, and
``beds check`` reports a collection missing from the named database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pluggy
import pytest
from click.testing import CliRunner
from pymongo import MongoClient

import beds_rec.plugin
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

pytestmark = pytest.mark.mongodb

TEMPLATE = """
name = "{name}"
store = "rec"
{database}
tla = "dbr"
key = ["place"]
[access]
fetch = ["*"]
[rec]
collection = "{collection}"
[fields.place]
type = "str"
max_length = 20
[queries.every]
params = []
max_limit = 5
projection = ["place"]
"""


def template(
    name: str, package: str, collection: str = "dbr_places", database: str = ""
) -> Template:
    line = f'database = "{database}"' if database else ""
    text = TEMPLATE.format(name=name, database=line, collection=collection)
    return parse_template(text, source=f"{package}/templates/{name}.toml")


MAIN = template("dbr_main", "dbr_main_pkg")
ARCHIVE = template("dbr_arch", "dbr_arch_pkg", database="arch")
LOST = template("dbr_lost", "dbr_arch_pkg", collection="dbr_only_main", database="arch")
"""On ``arch``, reading a collection only ``main`` has: missing from its own database."""


def collection(package: str, name: str) -> SchemaFile:
    return SchemaFile(
        name=f"{package}/schema/rec/{name}.json", text=json.dumps({"collection": name})
    )


SCHEMA = [
    collection("dbr_main_pkg", "dbr_places"),
    collection("dbr_main_pkg", "dbr_only_main"),
    collection("dbr_arch_pkg", "dbr_places"),
]


class Packages:
    """The two template packages, and their schema files."""

    def __init__(self, *templates: Template) -> None:
        self.templates = templates

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        for declared in self.templates:
            registry.add(declared)
        registry.schema["rec"] = list(SCHEMA)


def plugins(*templates: Template) -> pluggy.PluginManager:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(beds_rec.plugin)
    pm.register(Packages(*templates))
    return pm


class Databases:
    """The module's two databases, the node configuration that names them, and apply's output."""

    def __init__(self, folder: Path, amqp_url: str, uri: str) -> None:
        self.main = unique_name("beds_dbr_main")[:60]
        self.arch = unique_name("beds_dbr_arch")[:60]
        env = unique_name("dbr")
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
enabled = false
[lineage]
enabled = false
[roles.appServer.brokers.rBroker]
instances = 1
[roles.appServer.brokers.wBroker]
instances = 1
[roles.appServer.brokers.mBroker]
instances = 1
[stores.rec]
uri = "{uri}"
database = "{self.main}"
server_selection_timeout = 5
[stores.rec.databases.arch]
database = "{self.arch}"
""",
            encoding="utf-8",
        )
        self.applied: list[str] = []

    def config(self) -> Config:
        return load_config(self.path, environ={})


@pytest.fixture(scope="module")
def databases(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, mongo_server_uri: str
) -> Iterator[Databases]:
    """Both databases' collections made by ``beds schema apply``, a document in each."""
    made = Databases(tmp_path_factory.mktemp("dbr"), amqp_url, mongo_server_uri)
    client: MongoClient[dict[str, object]] = MongoClient(mongo_server_uri)
    try:
        with pytest.MonkeyPatch.context() as patch:
            pm = plugins(MAIN, ARCHIVE, LOST)
            patch.setattr("beds.ipl.make_plugin_manager", lambda **_: pm)
            result = CliRunner().invoke(cli, ["schema", "apply", "--config", str(made.path)])
        assert result.exit_code == 0, result.output
        made.applied = result.stdout.splitlines()
        client[made.main]["dbr_places"].insert_one({"place": "main"})
        client[made.arch]["dbr_places"].insert_one({"place": "archive"})
        yield made
    finally:
        for name in (made.main, made.arch):
            client.drop_database(name)
        client.close()


def test_schema_apply_creates_each_packages_collections_in_its_own_database(
    databases: Databases,
) -> None:
    assert "applied rec: dbr_main_pkg/schema/rec/dbr_places.json" in databases.applied
    assert "applied rec: dbr_main_pkg/schema/rec/dbr_only_main.json" in databases.applied
    assert "applied rec.arch: dbr_arch_pkg/schema/rec/dbr_places.json" in databases.applied
    assert not any(line.startswith("applied rec.arch: dbr_main_pkg/") for line in databases.applied)


async def test_each_template_reads_its_own_database(databases: Databases) -> None:
    async with (
        BedsNode(databases.config(), plugin_manager=plugins(MAIN, ARCHIVE)) as node,
        client_of_node(node) as client,
    ):
        main = await client.fetch("dbr_main", "every", {})
        archive = await client.fetch("dbr_arch", "every", {})
    assert main == [{"place": "main"}]
    assert archive == [{"place": "archive"}]
    checks = {check.name: (check.status, check.detail) for check in node.checks}
    assert checks["store rec.arch"] == ("ok", "")
    assert checks["template dbr_arch objects"] == ("ok", "database rec.arch")


async def test_check_names_a_collection_missing_from_the_named_database(
    databases: Databases,
) -> None:
    checks = await BedsNode(databases.config(), plugin_manager=plugins(MAIN, LOST)).check()
    found = {check.name: (check.status, check.detail) for check in checks}
    assert found["template dbr_main objects"] == ("ok", "")
    status, detail = found["template dbr_lost objects"]
    assert status == "warning"
    assert "dbr_only_main" in detail  # it exists, but in the default database only
    assert f"from database {databases.arch!r}" in detail
    assert detail.endswith("(in database rec.arch)")
