"""Schema migrations against real MariaDB and the MongoDB wire server (docs/cli.md, schema).

The installed template packages (beds-templates-example, beds-identity) are migrated into a
MariaDB database and a MongoDB database of this module only, both dropped afterwards: ``beds
schema apply`` records each file; a second run applies nothing; a migration missing from the
record fails the start-up check naming its file until ``beds schema migrate --local`` applies
it; an edited migration is a warning for ``apply`` and a refusal for ``migrate``; a file that
fails part-way leaves the ones before it recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncmy
import pytest
from click.testing import CliRunner
from pymongo import MongoClient

from beds.cli import cli
from beds.config import load_config
from beds.errors import BedsError, ConfigError, StoreError
from beds.migrations import migration_version, package_of_file, run_migrations
from beds.namaste import SchemaFile, StoreSettings
from beds.node import BedsNode
from beds.testing import TestIdentity, unique_name
from beds_rec.adapter import RecAdapter
from beds_rel.adapter import RelAdapter
from tests.integration.nodes import beds_command, clean_environ

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from click.testing import Result

EXAMPLE = "beds-templates-example"


class Databases:
    """The module's databases and the configuration that names them."""

    def __init__(self, folder: Path, amqp_url: str, mariadb_url: str, mongo_uri: str) -> None:
        self.rel = unique_name("beds_mig")[:60]
        self.rec = unique_name("beds_mig")[:60]
        parts = urlsplit(mariadb_url)
        self.rel_url = mariadb_url.replace(parts.path, "/" + self.rel)
        self.mongo_uri = mongo_uri
        self.folder = folder
        self.amqp_url = amqp_url
        self.path = self.config(unique_name("mig"))

    def config(self, env: str, extra: str = "") -> Path:
        """A config file of a development node of ``env`` on the module's databases."""
        path = self.folder / f"{env}.toml"
        amqp_url, mongo_uri = self.amqp_url, self.mongo_uri
        path.write_text(
            f"""schema_version = 1
[node]
name = "m1"
env = "{env}"
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
[stores.rel]
url = "{self.rel_url}"
[stores.rec]
uri = "{mongo_uri}"
database = "{self.rec}"
server_selection_timeout = 5
{extra}""",
            encoding="utf-8",
        )
        return path

    def beds(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--config", str(self.path)])

    def rel_adapter(self) -> RelAdapter:
        return RelAdapter.from_settings(StoreSettings(store="rel", options={"url": self.rel_url}))

    def sql(self, statement: str) -> None:
        """Run one statement in the module's MariaDB database, committed (autocommit)."""

        async def run() -> None:
            conn = await asyncmy.connect(**self.rel_adapter().settings.connect_kwargs())
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(statement)
            finally:
                await conn.ensure_closed()

        asyncio.run(run())

    def rec_adapter(self) -> RecAdapter:
        options = {"uri": self.mongo_uri, "database": self.rec, "server_selection_timeout": 5}
        return RecAdapter.from_settings(StoreSettings(store="rec", options=options))


@pytest.fixture(scope="module")
def databases(
    tmp_path_factory: pytest.TempPathFactory,
    amqp_url: str,
    mariadb_url: str,
    mongo_server_uri: str,
    mariadb_sql: Callable[[str], None],
) -> Iterator[Databases]:
    made = Databases(tmp_path_factory.mktemp("mig"), amqp_url, mariadb_url, mongo_server_uri)
    try:
        yield made
    finally:
        mariadb_sql(f"DROP DATABASE IF EXISTS `{made.rel}`")
        client: MongoClient[dict[str, object]] = MongoClient(mongo_server_uri)
        try:
            client.drop_database(made.rec)
        finally:
            client.close()


def _shipped(databases: Databases, store: str) -> list[tuple[int, str]]:
    """The example package's (version, file) for ``store``, as the registry has them."""
    node = BedsNode(load_config(databases.path, environ={}))
    node.load_plugins()
    assert node.registry is not None
    return sorted(
        (version, file.name)
        for file in node.registry.schema.get(store, [])
        if package_of_file(file) == EXAMPLE and (version := migration_version(file.name))
    )


def _versions(adapter: RelAdapter | RecAdapter, package: str) -> list[int]:
    recorded = asyncio.run(adapter.read_migrations()) or []
    return [entry.version for entry in recorded if entry.package == package]


def _forget(databases: Databases, version: int) -> None:
    databases.sql(
        f"DELETE FROM beds_schema_migrations WHERE package = '{EXAMPLE}' AND version = {version}"
    )


def _schema_check(databases: Databases, connection: str) -> tuple[str, str]:
    checks = asyncio.run(BedsNode(load_config(databases.path, environ={})).check())
    found = {check.name: (check.status, check.detail) for check in checks}
    return found[f"schema {connection}"]


def test_apply_records_each_migration_once_and_check_passes(databases: Databases) -> None:
    rel, rec = _shipped(databases, "rel"), _shipped(databases, "rec")
    first = databases.beds("schema", "apply")
    assert first.exit_code == 0, first.output
    for _, name in rel:
        assert f"applied rel: {name}" in first.stdout
    for _, name in rec:
        assert f"applied rec: {name}" in first.stdout
    assert _versions(databases.rel_adapter(), EXAMPLE) == [version for version, _ in rel]
    assert _versions(databases.rec_adapter(), EXAMPLE) == [version for version, _ in rec]
    again = databases.beds("schema", "apply")
    assert again.exit_code == 0, again.output
    assert "/schema/" not in again.stdout  # only the adapters' own objects, re-appliable
    assert _schema_check(databases, "rel")[0] == "ok"
    status = databases.beds("schema", "status", "--json")
    assert status.exit_code == 0, status.output
    assert '"pending": []' in status.stdout


def test_a_pending_migration_fails_the_check_until_migrate_applies_it(
    databases: Databases,
) -> None:
    assert databases.beds("schema", "apply").exit_code == 0
    (before, _), (last, name) = _shipped(databases, "rel")[-2:]
    _forget(databases, last)  # as if the package had shipped its last file after a migration
    status, detail = _schema_check(databases, "rel")
    assert status == "warning"  # development; production refuses to start
    basename = name.rpartition("/")[2]
    assert detail == (
        f"package {EXAMPLE} needs version {last}, installed {before} (pending {basename}): "
        "run beds schema migrate"
    )
    table = databases.beds("schema", "status")
    assert basename in table.stdout
    migrated = databases.beds("schema", "migrate", "--local")
    assert migrated.exit_code == 0, migrated.output
    assert [line for line in migrated.stdout.splitlines() if "/schema/" in line] == [
        f"applied rel: {name}"
    ]
    assert _schema_check(databases, "rel")[0] == "ok"


def test_an_edited_migration_warns_on_apply_and_is_refused_by_migrate(
    databases: Databases,
) -> None:
    assert databases.beds("schema", "apply").exit_code == 0
    table = "beds_schema_migrations"
    where = f"WHERE package = '{EXAMPLE}' AND version = 2"
    databases.sql(f"UPDATE {table} SET sha256 = REPEAT('0', 64) {where}")
    try:
        warned = databases.beds("schema", "apply")
        assert warned.exit_code == 0, warned.output
        assert "002_spew_note.sql: recorded 000000000000" in warned.stderr
        refused = databases.beds("schema", "migrate", "--local")
        assert refused.exit_code == 1
        assert "must never be edited" in refused.stderr
        assert "002_spew_note.sql" in refused.stderr
    finally:  # the module's other tests see the true checksum again
        databases.sql(f"DELETE FROM {table} {where}")
        assert databases.beds("schema", "apply").exit_code == 0


def test_a_failing_migration_keeps_the_ones_before_it_recorded(databases: Databases) -> None:
    adapter = databases.rel_adapter()
    package = "mig_fail_pkg"
    files = [
        SchemaFile(
            name=f"{package}/schema/rel/001_a.sql", text="CREATE TABLE IF NOT EXISTS mfa (a INT)"
        ),
        SchemaFile(name=f"{package}/schema/rel/002_b.sql", text="CREATE TABLE mfa (a INT)"),
        SchemaFile(name=f"{package}/schema/rel/003_c.sql", text="SELECT 1"),
    ]
    applied: list[int] = []

    async def run() -> None:
        await run_migrations(
            adapter,
            "rel",
            files,
            applied_by="test",
            strict=True,
            on_applied=lambda entry: applied.append(entry.version),
        )

    with pytest.raises(StoreError) as failed:
        asyncio.run(run())
    assert f"{package}/schema/rel/002_b.sql: statement at line 1" in failed.value.details
    assert applied == [1]
    assert _versions(adapter, package) == [1]
    # Fixed in a new shipment: the run goes on from the file that failed.
    files[1] = SchemaFile(name=files[1].name, text="ALTER TABLE mfa ADD COLUMN b INT")
    asyncio.run(run())
    assert applied == [1, 2, 3]
    assert _versions(adapter, package) == [1, 2, 3]


# The production path: ``beds schema migrate`` submits the beds_schema ticket to a running node,
# whose worker applies the files through the DBA account of migration_url (a MariaDB user with a
# password made here, so a leak of it can be searched for).

_CALGON = """
[calgon]
store = "rel"
poll_seconds = 0.2
lease_seconds = 5
"""


@pytest.fixture(scope="module")
def dba(databases: Databases, mariadb_sql: Callable[[str], None]) -> Iterator[tuple[str, str]]:
    """A DBA account of the module's MariaDB database: its migration_url and password."""
    user, password = unique_name("mdba")[:30], f"Pw-{uuid.uuid4().hex}"
    mariadb_sql(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
    mariadb_sql(f"GRANT ALL PRIVILEGES ON `{databases.rel}`.* TO '{user}'@'%'")
    parts = urlsplit(databases.rel_url)
    url = f"mysql://{user}:{password}@{parts.hostname}:{parts.port or 3306}/{databases.rel}"
    try:
        yield url, password
    finally:
        mariadb_sql(f"DROP USER IF EXISTS '{user}'@'%'")


@contextlib.contextmanager
def _running(databases: Databases, env: str, environ: dict[str, str]) -> Iterator[Path]:
    """A ``beds run`` node of ``env`` (development) until the block ends; yields its log."""
    config = databases.config(env, _CALGON)
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "beds", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean_environ(), **environ},
        )
    try:
        if not asyncio.run(_ready(databases.amqp_url, env, process)):
            pytest.fail(f"beds run did not serve:\n{log.read_text()}", pytrace=False)
        yield log
    finally:
        process.kill()
        process.wait(timeout=30)


async def _ready(amqp_url: str, env: str, process: subprocess.Popen[bytes]) -> bool:
    """Whether the node answers a ping within a minute (``False``: it exited or did not)."""
    from beds.client import BedsClient

    client = BedsClient(amqp_url, exchange=f"beds.events.{env}", env=env, origin="t", timeout=5)
    deadline = time.monotonic() + 60
    async with client:
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(BedsError):
                if (await client.ping(timeout=1)).ok:
                    return True
            await asyncio.sleep(0.2)
    return False


def _migrate(databases: Databases, env: str, *roles: str) -> subprocess.CompletedProcess[str]:
    token = TestIdentity.development(env).token("ops", roles)
    config = databases.folder / f"{env}.toml"
    return beds_command("schema", "migrate", "--config", str(config), "--token", token)


def _ticket_rows(databases: Databases) -> str:
    """Every row of the module database's ticket tables, as text (what a DBA could read)."""

    async def run() -> str:
        conn = await asyncmy.connect(**databases.rel_adapter().settings.connect_kwargs())
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name LIKE 'beds_ticket%'"
                )
                tables = [name for (name,) in await cursor.fetchall()]
                rows = []
                for table in tables:
                    await cursor.execute(f"SELECT * FROM `{table}`")
                    rows += [repr(row) for row in await cursor.fetchall()]
        finally:
            await conn.ensure_closed()
        return "\n".join(rows)

    return asyncio.run(run())


def test_migrate_runs_as_a_ticket_of_admins_through_the_dba_account(
    databases: Databases, dba: tuple[str, str], tmp_path: Path
) -> None:
    url, password = dba
    assert databases.beds("schema", "apply").exit_code == 0
    shipped = _shipped(databases, "rel")
    (last, name) = shipped[-1]
    _forget(databases, last)
    assert _schema_check(databases, "rel")[0] == "warning"
    secret = tmp_path / "migration_url"
    secret.write_text(url + "\n", encoding="utf-8")
    env = unique_name("migt")
    with _running(databases, env, {"BEDS__STORES__REL__MIGRATION_URL_FILE": str(secret)}) as log:
        member = _migrate(databases, env, "member")
        assert member.returncode == 1, member.stdout + member.stderr
        assert "BEDS-403" in member.stderr
        admin = _migrate(databases, env, "member", "admin")
        assert admin.returncode == 0, admin.stdout + admin.stderr
        assert admin.stdout.splitlines() == [f"applied rel: {name} (version {last})"]
        again = _migrate(databases, env, "admin")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing to migrate" in again.stdout
        node_log = log.read_text(encoding="utf-8")
    assert _versions(databases.rel_adapter(), EXAMPLE) == [version for version, _ in shipped]
    recorded = asyncio.run(databases.rel_adapter().read_migrations()) or []
    (entry,) = [e for e in recorded if e.package == EXAMPLE and e.version == last]
    assert entry.applied_by.startswith("beds schema migrate (")
    assert _schema_check(databases, "rel")[0] == "ok"
    written = [node_log, _ticket_rows(databases)]
    written += [r.stdout + r.stderr for r in (member, admin, again)]
    assert all(password not in text for text in written)
    assert "beds_schema" in written[1]  # the rows were there to search


def test_migrate_without_migration_url_fails_the_ticket_naming_the_key(
    databases: Databases,
) -> None:
    assert databases.beds("schema", "apply").exit_code == 0
    (last, _) = _shipped(databases, "rel")[-1]
    _forget(databases, last)
    env = unique_name("migt")
    try:
        with _running(databases, env, {}):
            failed = _migrate(databases, env, "admin")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "BEDS-501" in failed.stderr
        assert "stores.rel.migration_url" in failed.stderr
        assert last not in _versions(databases.rel_adapter(), EXAMPLE)
    finally:
        assert databases.beds("schema", "apply").exit_code == 0


def test_a_failing_file_fails_the_ticket_and_keeps_the_files_before_it(
    databases: Databases, dba: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = dba
    assert databases.beds("schema", "apply").exit_code == 0
    plugin = _failing_package(tmp_path / "plugin")
    env = unique_name("migt")
    environ = {"BEDS__STORES__REL__MIGRATION_URL": url, "PYTHONPATH": str(plugin)}
    with _running(databases, env, environ):
        failed = _migrate(databases, env, "admin")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "schema migrate ticket" in failed.stderr
    assert "failed: BEDS-502" in failed.stderr
    assert "beds_test_migfail/schema/rel/002_bad.sql" in failed.stderr
    assert _versions(databases.rel_adapter(), "beds-test-migfail") == [1]
    assert "running" not in _ticket_states(databases)


def _ticket_states(databases: Databases) -> set[str]:
    async def run() -> set[str]:
        conn = await asyncmy.connect(**databases.rel_adapter().settings.connect_kwargs())
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(
                    "SELECT state FROM beds_tickets WHERE template = 'beds_schema'"
                )
                return {state for (state,) in await cursor.fetchall()}
        finally:
            await conn.ensure_closed()

    return asyncio.run(run())


_FAILING_PLUGIN = '''
"""A template package whose second migration fails (tests/integration/test_schema_migrations)."""

from beds import hookimpl


@hookimpl
def beds_register_templates(registry):
    registry.add_package(__package__)
'''


def _failing_package(folder: Path) -> Path:
    """A folder that, on ``PYTHONPATH``, installs a package shipping 001 (good), 002 (bad)."""
    package = folder / "beds_test_migfail"
    (package / "templates").mkdir(parents=True)
    (package / "schema" / "rel").mkdir(parents=True)
    (package / "__init__.py").write_text(_FAILING_PLUGIN, encoding="utf-8")
    rel = package / "schema" / "rel"
    (rel / "001_good.sql").write_text("CREATE TABLE IF NOT EXISTS mgf_a (a INT)", "utf-8")
    (rel / "002_bad.sql").write_text("CREATE TABLE mgf_a (a INT)", "utf-8")
    info = folder / "beds_test_migfail-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: beds-test-migfail\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[beds]\nmigfail = beds_test_migfail\n", encoding="utf-8"
    )
    return folder


# migration_url: validated by each store's settings, a secret for the loader.


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"migration_url": "mysql://dba:pw@db/other"},
            "stores.rel.migration_url: must reach the database of url (app) or name none",
        ),
        ({"migration_url": "http://dba:pw@db/app"}, "must start with mysql:// or mariadb://"),
        ({"migration_url": "mysql://db/app"}, "stores.rel.migration_url: must name a user"),
    ],
)
def test_a_bad_rel_migration_url_is_refused_naming_the_key(
    options: dict[str, str], problem: str
) -> None:
    settings = StoreSettings(store="rel", options={"url": "mysql://beds@db/app", **options})
    with pytest.raises(ConfigError) as refused:
        RelAdapter.from_settings(settings)
    assert problem in str(refused.value)
    assert "pw" not in str(refused.value)


def test_a_rel_migration_url_reaches_the_database_of_url() -> None:
    options = {"url": "mysql://beds@db/app", "migration_url": "mysql://dba:pw@db2:3307/"}
    adapter = RelAdapter.from_settings(StoreSettings(store="rel", options=options))
    dba = adapter.migration_store()
    assert isinstance(dba, RelAdapter)
    assert (dba.settings.user, dba.settings.host, dba.settings.port) == ("dba", "db2", 3307)
    assert (dba.settings.database, dba.settings.password) == ("app", "pw")
    assert "pw" not in repr(adapter.settings)
    plain = RelAdapter.from_settings(StoreSettings(store="rel", options={"url": options["url"]}))
    assert plain.migration_store() is None


def test_a_rec_migration_url_is_a_mongodb_uri(mongo_server_uri: str) -> None:
    base = {"uri": mongo_server_uri, "database": "d"}
    refused = StoreSettings(store="rec", options={**base, "migration_url": "embedded"})
    with pytest.raises(ConfigError, match=r"stores\.rec\.migration_url: must be a mongodb"):
        RecAdapter.from_settings(refused)
    options = {**base, "migration_url": mongo_server_uri}
    dba = RecAdapter.from_settings(StoreSettings(store="rec", options=options)).migration_store()
    assert isinstance(dba, RecAdapter)
    assert (dba.settings.uri, dba.settings.database) == (mongo_server_uri, "d")
    assert (
        RecAdapter.from_settings(StoreSettings(store="rec", options=base)).migration_store() is None
    )


def test_production_refuses_a_migration_url_password_in_the_base_file(tmp_path: Path) -> None:
    base = tmp_path / "beds.toml"
    base.write_text(
        'schema_version = 1\n[node]\nmode = "production"\n[stores.rel]\n'
        'url = "mysql://beds@db/app"\nmigration_url = "mysql://dba:s3cret@db/app"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_config(base, environ={})
    assert str(refused.value).startswith(
        "stores.rel.migration_url: holds a password; in production secrets come from the "
        "environment (set BEDS__STORES__REL__MIGRATION_URL)"
    )
    base.write_text(
        'schema_version = 1\n[node]\nmode = "production"\n[stores.rel]\nurl = "mysql://beds@db/app"\n',
        encoding="utf-8",
    )
    secret = tmp_path / "url"
    secret.write_text("mysql://dba:s3cret@db/app\n", encoding="utf-8")
    environ = {"BEDS__STORES__REL__MIGRATION_URL_FILE": str(secret)}
    config = load_config(base, environ=environ)
    assert config.stores["rel"]["migration_url"] == "mysql://dba:s3cret@db/app"
