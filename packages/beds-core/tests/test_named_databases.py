"""Several databases per store: named connections in config, chosen by a template's ``database``.

The configuration's split (a named connection inherits its store's table, its own keys win,
sub-tables are replaced whole), the key paths errors name, the template key, and what the node
makes of them: one adapter per connection used, each template served and verified by its own,
an undeclared database a template problem; then ``beds schema apply``'s files per connection,
the provisioning plan per connection, ``beds templates --json``. The stores are memory adapters
(the real ones: tests/integration/rel/test_rel_databases.py and rec/test_rec_databases.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest
from click.testing import CliRunner
from loguru import logger

from beds import hookimpl
from beds.cli import cli
from beds.cli.schema import files_for
from beds.config import Config, load_config
from beds.config.stores import connection_table, databases_of
from beds.errors import ConfigError, DatabaseObjectMissing, TemplateError
from beds.factory import Factory
from beds.ipl import Ipl
from beds.namaste import SchemaFile, StoreSettings
from beds.nodeinfo import StartupError
from beds.plugins import make_plugin_manager
from beds.provision.needs import Grant, StoreNeeds
from beds.provision.plan import Installed, account_of, provisioner_of, store_needs
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.templates import Template, parse_template
from beds.testing import MemoryAdapter

BASE = """schema_version = 1
[node]
role = "tester"
mode = "{mode}"
[lineage]
enabled = false
[roles.tester.brokers.main]
bindings = ["#"]
[stores.memory]
url = "mem://main/app"
pool_max = 8
[stores.memory.tls]
ca_file = "/etc/beds/main-ca.pem"
verify_identity = false
[stores.memory.databases.wh]
url = "mem://wh/warehouse"
pool_max = 4
[stores.memory.databases.wh.tls]
ca_file = "/etc/beds/wh-ca.pem"
[stores.memory.databases.archive]
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "beds.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config(write: Callable[..., Path], mode: str = "development", extra: str = "") -> Config:
    return load_config(write(BASE.format(mode=mode) + extra), environ={})


# -- the configuration -------------------------------------------------------------------------


def test_the_default_connection_gets_the_table_without_databases(
    write: Callable[..., Path],
) -> None:
    loaded = config(write)
    assert connection_table(loaded.stores, "memory") == {
        "url": "mem://main/app",
        "pool_max": 8,
        "tls": {"ca_file": "/etc/beds/main-ca.pem", "verify_identity": False},
    }
    assert databases_of(loaded.stores, "memory") == ("archive", "wh")
    assert databases_of(loaded.stores, "rel") == ()


def test_a_named_connection_inherits_its_stores_keys_and_its_own_win(
    write: Callable[..., Path],
) -> None:
    loaded = config(write)
    # tls is replaced whole: verify_identity is not inherited into the named table's tls.
    assert connection_table(loaded.stores, "memory.wh") == {
        "url": "mem://wh/warehouse",
        "pool_max": 4,
        "tls": {"ca_file": "/etc/beds/wh-ca.pem"},
    }
    assert connection_table(loaded.stores, "memory.archive") == connection_table(
        loaded.stores, "memory"
    )
    assert connection_table(loaded.stores, "memory.nope") is None
    assert loaded.stores["memory"]["databases"]["wh"]["pool_max"] == 4  # the raw table is kept


def test_store_settings_name_each_connections_key_path_and_file(
    write: Callable[..., Path],
) -> None:
    loaded = config(write)
    default = StoreSettings.of(loaded, "memory")
    named = StoreSettings.of(loaded, "memory.wh")
    assert (default.store, default.database, default.key) == ("memory", "", "stores.memory")
    assert (named.store, named.database, named.key) == (
        "memory",
        "wh",
        "stores.memory.databases.wh",
    )
    assert (default.connection, named.connection) == ("memory", "memory.wh")
    assert named.file == default.file == loaded.files[0]
    assert StoreSettings(store="rel", options={}).key == "stores.rel"
    with pytest.raises(ConfigError) as refused:
        StoreSettings.of(loaded, "memory.nope")
    assert refused.value.key == "stores.memory.databases"
    assert "declares no database 'nope'" in str(refused.value)


def test_each_connection_names_the_file_that_set_its_table(write: Callable[..., Path]) -> None:
    base = write(BASE.format(mode="development"))
    env = write("[stores.memory.databases.wh]\nconnect_timeout = 2\n", "env_dev.toml")
    loaded = load_config(
        base, environ={"BEDS__STORES__MEMORY__DATABASES__ARCHIVE__URL": "mem://archive/a"}
    )
    assert loaded.store_files["memory"] == str(base)
    assert loaded.store_files["memory.wh"] == str(env)
    assert loaded.store_files["memory.archive"] == (
        "<environment> BEDS__STORES__MEMORY__DATABASES__ARCHIVE__URL"
    )
    assert connection_table(loaded.stores, "memory.archive")["url"] == "mem://archive/a"  # type: ignore[index]


@pytest.mark.parametrize(
    ("table", "key", "said"),
    [
        ('databases = "wh"\n', "stores.rel.databases", "must be a table of named connections"),
        ("databases = [1]\n", "stores.rel.databases", "got list"),
        ("databases = { wh = 5 }\n", "stores.rel.databases.wh", "must be a table"),
        ('[stores.rel.databases."9wh"]\n', "stores.rel.databases.9wh", "is not a database name"),
        ('[stores.rel.databases."w-h"]\n', "stores.rel.databases.w-h", "is not a database name"),
        (f"[stores.rel.databases.{'w' * 65}]\n", f"stores.rel.databases.{'w' * 65}", "at most 64"),
    ],
    ids=["string", "list", "not-a-table", "digit-first", "dash", "too-long"],
)
def test_a_bad_databases_table_names_its_key_and_file(
    write: Callable[..., Path], table: str, key: str, said: str
) -> None:
    path = write(f"schema_version = 1\n[stores.rel]\n{table}")
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert (refused.value.key, refused.value.file) == (key, str(path))
    assert said in str(refused.value)


def test_production_refuses_a_named_connections_password_in_the_base_file(
    write: Callable[..., Path],
) -> None:
    path = write(
        'schema_version = 1\n[node]\nmode = "production"\n[stores.rel]\nurl = "mysql://b@db/a"\n'
        '[stores.rel.databases.wh]\nurl = "mysql://b:Pw7secret@db-wh/w"\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={})
    assert refused.value.key == "stores.rel.databases.wh.url"
    assert "Pw7secret" not in str(refused.value)


# -- the template key --------------------------------------------------------------------------

NOTE = """
name = "{name}"
store = "memory"
{database}
tla = "{tla}"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.text]
type = "str"
max_length = 20
[operations.create]
params = ["text"]
returns = ["id"]
[queries.by_id]
params = ["id"]
max_limit = 1
"""


def note(name: str, tla: str, database: str | None = None, source: str = "") -> Template:
    line = "" if database is None else f"database = {json.dumps(database)}"
    return parse_template(
        NOTE.format(name=name, tla=tla, database=line), source=source or f"{name}.toml"
    )


def test_a_template_chooses_a_database_by_name() -> None:
    named = note("wh_note", "whn", "wh")
    assert (named.store, named.database, named.connection) == ("memory", "wh", "memory.wh")
    default = note("main_note", "mnn")
    assert (default.database, default.connection) == ("", "memory")


@pytest.mark.parametrize("value", ["9wh", "w-h", "memory.wh", "w" * 65, 5, True])
def test_a_database_that_is_no_identifier_is_refused_naming_file_and_key(value: object) -> None:
    with pytest.raises(TemplateError) as refused:
        note("bad_note", "bdn", value, source="pkg/templates/bad_note.toml")  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith("template 'bad_note': pkg/templates/bad_note.toml: database ")
    assert ("must be a string" if not isinstance(value, str) else "must name one") in message


# -- the node ----------------------------------------------------------------------------------


class Recording(MemoryAdapter):
    """A memory adapter built for one connection, which says which templates it verified."""

    def __init__(self, settings: StoreSettings, missing: frozenset[str]) -> None:
        super().__init__(settings.store)
        self.settings = settings
        self.missing = missing
        self.verified: list[str] = []

    async def verify(self, template: Template) -> None:
        self.verified.append(template.name)
        if template.name in self.missing:
            raise DatabaseObjectMissing("missing database objects", details=["whn_by_id"])


class Domain:
    """The memory store, and templates on its default connection and on named ones."""

    def __init__(
        self,
        templates: list[Template],
        missing: frozenset[str] = frozenset(),
        refused: ConfigError | None = None,
    ) -> None:
        self.templates = templates
        self.missing = missing
        self.refused = refused
        """Raised when building a named connection's adapter (a table the adapter refuses)."""
        self.adapters: dict[str, Recording] = {}

    def build(self, settings: StoreSettings) -> Recording:
        if self.refused is not None and settings.database:
            raise self.refused
        adapter = self.adapters[settings.connection] = Recording(settings, self.missing)
        return adapter

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="memory", factory=self.build)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        for template in self.templates:
            registry.add(template)


def plugins(domain: Domain) -> pluggy.PluginManager:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(domain, name="domain")
    return pm


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """IPL and the CLI log through loguru: leave it as the other tests expect."""
    yield
    logger.remove()
    logger.disable("beds")


MAIN = note("main_note", "mnn")
WAREHOUSE = note("wh_note", "whn", "wh")


def test_the_node_builds_one_adapter_per_connection_its_templates_use(
    write: Callable[..., Path],
) -> None:
    domain = Domain([MAIN, WAREHOUSE])
    ipl = Ipl(config(write), plugin_manager=plugins(domain))
    ipl.load_plugins(every_store=False)
    assert sorted(ipl.adapters) == ["memory", "memory.wh"]  # not memory.archive: unused
    assert sorted(ipl.templates) == ["main_note", "wh_note"]
    named = domain.adapters["memory.wh"].settings
    assert (named.key, named.options["url"], named.options["pool_max"]) == (
        "stores.memory.databases.wh",
        "mem://wh/warehouse",
        4,
    )
    assert "databases" not in domain.adapters["memory"].settings.options
    factory = Factory(ipl.templates, ipl.adapters)
    assert factory.resolve("wh_note")[1] is domain.adapters["memory.wh"]
    assert factory.resolve("main_note")[1] is domain.adapters["memory"]
    assert sorted(domain.adapters["memory.wh"].tables) == ["wh_note"]  # prepared by its own


async def test_each_template_is_verified_in_its_own_database(write: Callable[..., Path]) -> None:
    domain = Domain([MAIN, WAREHOUSE], missing=frozenset({"wh_note"}))
    ipl = Ipl(config(write), plugin_manager=plugins(domain))
    ipl.load_plugins(every_store=False)
    await ipl.verify_templates()
    assert domain.adapters["memory"].verified == ["main_note"]
    assert domain.adapters["memory.wh"].verified == ["wh_note"]
    checks = {check.name: check for check in ipl.checks}
    assert checks["template main_note objects"].status == "ok"
    missing = checks["template wh_note objects"]
    assert (missing.status, missing.detail) == (
        "warning",
        "missing database objects: whn_by_id (in database memory.wh)",
    )


@pytest.mark.parametrize("mode", ["development", "production"])
def test_a_template_on_an_undeclared_database_is_a_problem_and_not_served(
    write: Callable[..., Path], mode: str
) -> None:
    lost = note("lost_note", "lsn", "nope")
    domain = Domain([MAIN, lost])
    ipl = Ipl(config(write, mode), plugin_manager=plugins(domain))
    said = (
        "uses database 'nope' of store 'memory', which the configuration does not declare "
        "(add [stores.memory.databases.nope], key stores.memory.databases); it is not served"
    )
    if mode == "production":
        with pytest.raises(StartupError, match=r"start-up failed at template lost_note: uses"):
            ipl.load_plugins(every_store=False)
        return
    ipl.load_plugins(every_store=False)
    assert sorted(ipl.templates) == ["main_note"]
    assert sorted(ipl.adapters) == ["memory"]
    [problem] = [check for check in ipl.checks if check.status != "ok"]
    assert (problem.name, problem.status, problem.detail) == (
        "template lost_note",
        "warning",
        said,
    )


def test_an_adapter_refusing_a_named_table_fails_naming_the_connection(
    write: Callable[..., Path],
) -> None:
    refused = ConfigError("is required", key="stores.memory.databases.wh.path")
    domain = Domain([MAIN, WAREHOUSE], refused=refused)
    ipl = Ipl(config(write), plugin_manager=plugins(domain))
    with pytest.raises(StartupError) as failed:
        ipl.load_plugins(every_store=False)
    assert str(failed.value) == (
        "start-up failed at adapter memory.wh: is required (key stores.memory.databases.wh.path)"
    )


# -- schema apply ------------------------------------------------------------------------------


def test_a_packages_schema_goes_to_the_connections_its_templates_use() -> None:
    registry = TemplateRegistry()
    registry.add(note("a_main", "ama", source="both/templates/a_main.toml"))
    registry.add(note("a_wh", "awh", "wh", source="both/templates/a_wh.toml"))
    registry.add(note("b_wh", "bwh", "wh", source="only/templates/b_wh.toml"))
    registry.schema["memory"] = [
        SchemaFile(name="both/schema/memory/001.sql", text=""),
        SchemaFile(name="only/schema/memory/001.sql", text=""),
        SchemaFile(name="bare/schema/memory/001.sql", text=""),
    ]
    named = [file.name for file in files_for(registry, "memory.wh")]
    default = [file.name for file in files_for(registry, "memory")]
    assert named == ["both/schema/memory/001.sql", "only/schema/memory/001.sql"]
    # A package without templates of the store: its files go to the default connection.
    assert default == ["both/schema/memory/001.sql", "bare/schema/memory/001.sql"]
    assert files_for(registry, "memory.archive") == []


# -- provisioning ------------------------------------------------------------------------------


@attrs.define
class Provisioner:
    """A provisioner that grants one EXECUTE per template (the protocol's shape only)."""

    settings: StoreSettings
    store: str = "memory"
    service: str = "Memory"
    user: str = "beds"

    def grants(self, needs: StoreNeeds) -> tuple[Grant, ...]:
        return tuple(
            Grant(kind="procedure", name=use.template.name, privilege="EXECUTE")
            for use in needs.uses
        )

    @hookimpl
    def beds_store_provisioner(self, settings: StoreSettings) -> Provisioner:
        return Provisioner(settings)

    def statements(self, account: Any) -> list[str]:
        return []

    def url_for(self, account: Any, password: str) -> str:
        return ""

    async def apply(self, account: Any, password: str, *, admin_url: str) -> list[str]:
        return []

    async def review(self, account: Any) -> list[Any]:
        return []


def test_provisioning_plans_each_connection_on_its_own(write: Callable[..., Path]) -> None:
    loaded = config(write)
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Provisioner(StoreSettings(store="memory", options={})), name="provisioner")
    found = Installed(templates={t.name: t for t in (MAIN, WAREHOUSE)}, handled=frozenset(), pm=pm)
    needs = store_needs(loaded, found, "tester")
    assert sorted(needs) == ["memory", "memory.wh"]
    assert (needs["memory.wh"].store, needs["memory.wh"].database) == ("memory", "wh")
    assert [use.template.name for use in needs["memory.wh"].uses] == ["wh_note"]
    provisioner = provisioner_of(loaded, found, "memory.wh")
    assert isinstance(provisioner, Provisioner)
    assert provisioner.settings.key == "stores.memory.databases.wh"
    account = account_of(loaded, found, provisioner, "tester", user="u", connection="memory.wh")
    assert account is not None
    assert [grant.name for grant in account.grants] == ["wh_note"]
    default = account_of(loaded, found, provisioner_of(loaded, found, "memory"), "tester", user="u")
    assert default is not None
    assert [grant.name for grant in default.grants] == ["main_note"]
    with pytest.raises(ConfigError, match="declares no database 'nope'"):
        provisioner_of(loaded, found, "memory.nope")


# -- beds templates ----------------------------------------------------------------------------


def test_beds_templates_shows_each_templates_database(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = plugins(Domain([MAIN, WAREHOUSE]))
    monkeypatch.setattr("beds.ipl.make_plugin_manager", lambda **_: pm)
    path = write(BASE.format(mode="development"))
    listed = CliRunner().invoke(cli, ["templates", "--config", str(path), "--json"])
    assert listed.exit_code == 0, listed.output
    assert {row["name"]: row["database"] for row in json.loads(listed.stdout)} == {
        "main_note": "",
        "wh_note": "wh",
    }
    table = CliRunner().invoke(cli, ["templates", "--config", str(path)])
    assert table.stdout.splitlines()[1:] == [
        "main_note                memory mnn  ",
        "wh_note                  memory.wh whn  ",
    ]
