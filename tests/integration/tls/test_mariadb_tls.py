"""MariaDB over TLS against real TLS-only mariadbd servers, and the refusals a node makes.

``tls_mariadb_server`` (``require_secure_transport = ON``, a good certificate) serves the
adapter and a whole node; ``bad_cert_mariadb`` presents the certificate a test gives it
(``FLUSH SSL``): expired, or another host's. Every refusal names the key to change, and no
message holds the password.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pluggy
import pytest

import beds_rel.plugin
from beds import hookimpl
from beds.client import BedsClient
from beds.config import Config, load_config
from beds.errors import ConfigError, StoreUnavailable
from beds.namaste import CallContext, Query, StoreSettings
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.registry import TemplateRegistry
from beds.testing import unique_name
from beds.transport.tls import amqp_context
from beds_rel import RelAdapter
from tests.integration.tls.helpers import TlsBroker
from tests.integration.tls.servers import TlsMariadb

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

CTX = CallContext(event_id="test.rel-tls.0")
_EXAMPLE = TemplateRegistry()
_EXAMPLE.add_package("beds_templates_example")
SPEW_POST = _EXAMPLE.templates["spew_post"]
SCHEMA = _EXAMPLE.schema["rel"]


def make_adapter(url: str, **options: Any) -> RelAdapter:
    return RelAdapter.from_settings(
        StoreSettings(
            store="rel", options={"url": url, "connect_timeout": 3, **options}, file="beds.toml"
        )
    )


def issue(server: TlsMariadb, folder: Path, *names: str, expired: bool = False) -> None:
    """Give ``server`` a certificate from its CA for ``names`` (one that expired two days ago)."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    dates = {"not_before": past - dt.timedelta(days=1), "not_after": past} if expired else {}
    issued = server.ca.issue_cert(*names, **dates)
    cert, key = folder / "server-cert.pem", folder / "server-key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    server.use_certificate(str(cert), str(key))


async def refusal(adapter: RelAdapter) -> str:
    """What ``start()`` says when it cannot connect: the message and its details."""
    with pytest.raises(StoreUnavailable) as refused:
        await adapter.start()
    return f"{refused.value.message}: {', '.join(refused.value.details)}"


class SpewPost:
    """Only the example's REL template (the node then needs no REC store)."""

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add(SPEW_POST)


def rel_plugins() -> pluggy.PluginManager:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(beds_rel.plugin)
    pm.register(SpewPost())
    return pm


def node_config(folder: Path, broker: TlsBroker, rel_url: str, rel_tls: str | None) -> Config:
    """A node on the TLS RabbitMQ node; ``rel_tls`` is the [stores.rel.tls] table's body."""
    path = folder / "beds.toml"
    path.write_text(
        f"""schema_version = 1
[node]
env = "{unique_name("reltls")}"
drain_seconds = 1
[amqp]
url = "{broker.url()}"
[amqp.tls]
ca_file = "{broker.ca_file}"
[lineage]
enabled = false
[stores.rel]
url = "{rel_url}"
connect_timeout = 3
"""
        + ("" if rel_tls is None else f"[stores.rel.tls]\n{rel_tls}\n"),
        encoding="utf-8",
    )
    return load_config(path, environ={})


@pytest.fixture
async def rel(tls_mariadb_server: TlsMariadb) -> AsyncIterator[RelAdapter]:
    adapter = make_adapter(tls_mariadb_server.url(), tls={"ca_file": tls_mariadb_server.ca_file})
    adapter.prepare(SPEW_POST)
    await adapter.apply_schema(SCHEMA)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.aclose()


async def test_the_adapter_calls_over_an_encrypted_session(rel: RelAdapter) -> None:
    author = f"t_{uuid.uuid4().hex[:12]}"
    created = await rel.create(SPEW_POST, {"author": author, "body": "over TLS"}, CTX)
    spec = SPEW_POST.queries["by_id"]
    [post] = await rel.fetch(
        SPEW_POST, Query(spec=spec, params={"id": created["id"]}, limit=1), CTX
    )
    assert (post["author"], post["body"]) == (author, "over TLS")
    await rel.verify(SPEW_POST)
    # One of the pool's own sessions: the server says which cipher protects it.
    async with rel._connection() as conn, conn.cursor() as cursor:
        await cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        [(_, cipher)] = await cursor.fetchall()
    assert cipher


async def test_a_node_serves_rel_over_tls_on_every_hop(
    tls_broker: TlsBroker, tls_mariadb_server: TlsMariadb, rel: RelAdapter, tmp_path: Path
) -> None:
    """RabbitMQ over TLS (amqps) and MariaDB over TLS: a client fetches a post through a node."""
    created = await rel.create(SPEW_POST, {"author": "tls_node", "body": "every hop"}, CTX)
    config = node_config(
        tmp_path,
        tls_broker,
        tls_mariadb_server.url(),
        f'ca_file = "{tls_mariadb_server.ca_file}"',
    )
    async with (
        BedsNode(config, plugin_manager=rel_plugins()) as node,
        BedsClient(
            tls_broker.url(), env=config.node.env, timeout=10, ssl_context=amqp_context(config.amqp)
        ) as client,
    ):
        assert node.ready
        [post] = await client.fetch("spew_post", "by_id", {"id": created["id"]})
    assert post["body"] == "every hop"
    assert ("store rel", "ok") in [(check.name, check.status) for check in node.checks]


async def test_plaintext_to_a_tls_only_server_says_to_add_tls(
    tls_mariadb_server: TlsMariadb, tls_broker: TlsBroker, tmp_path: Path
) -> None:
    # MariaDB answers a plaintext login to require_secure_transport with "access denied"
    # (1045), as for a wrong password, so the message says both (MySQL's 3159 says TLS only).
    message = await refusal(make_adapter(tls_mariadb_server.url()))
    assert "MariaDB refused the login of stores.rel.url over a plaintext connection" in message
    assert "add [stores.rel.tls]" in message
    assert tls_mariadb_server.password not in message
    # What `beds check` prints: the IPL line of the store.
    config = node_config(tmp_path, tls_broker, tls_mariadb_server.url(), rel_tls=None)
    checks = await BedsNode(config, plugin_manager=rel_plugins()).check()
    assert (checks[-1].name, checks[-1].status) == ("store rel", "failed")
    assert "add [stores.rel.tls]" in checks[-1].detail
    assert tls_mariadb_server.password not in checks[-1].detail


async def test_a_wrong_password_over_tls_is_not_blamed_on_tls(
    tls_mariadb_server: TlsMariadb,
) -> None:
    url = tls_mariadb_server.url(password="not-the-password")
    message = await refusal(make_adapter(url, tls={"ca_file": tls_mariadb_server.ca_file}))
    assert message.startswith("MariaDB refused the configured credentials")
    assert "not-the-password" not in message


async def test_a_client_certificate_is_presented_to_an_account_that_requires_one(
    tls_mariadb_server: TlsMariadb, tmp_path: Path
) -> None:
    """``cert_file`` and ``key_file``: the server checks them against its CA (REQUIRE X509)."""
    import secrets

    user, password = unique_name("x509")[:32], secrets.token_urlsafe(12)
    database = tls_mariadb_server.database
    tls_mariadb_server.sql(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}' REQUIRE X509;\n"
        f"GRANT ALL ON `{database}`.* TO '{user}'@'%';\n"
    )
    try:
        issued = tls_mariadb_server.ca.issue_cert("beds-node@example.test")
        cert, key = tmp_path / "client.pem", tmp_path / "client-key.pem"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        url = f"mysql://{user}:{password}@localhost:{tls_mariadb_server.port}/{database}"
        ca = {"ca_file": tls_mariadb_server.ca_file}
        adapter = make_adapter(url, tls={**ca, "cert_file": str(cert), "key_file": str(key)})
        await adapter.start()
        await adapter.aclose()
        # Without the certificate the server refuses the login (as for a wrong password).
        message = await refusal(make_adapter(url, tls=ca))
        assert message.startswith("MariaDB refused the configured credentials")
        assert password not in message
    finally:
        tls_mariadb_server.sql(f"DROP USER '{user}'@'%';\n")


async def test_an_unknown_ca_is_refused_naming_ca_file(
    tls_mariadb_server: TlsMariadb, tmp_path: Path
) -> None:
    import trustme

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    message = await refusal(make_adapter(tls_mariadb_server.url(), tls={"ca_file": str(other)}))
    assert message.startswith(
        "cannot connect to the MariaDB server of stores.rel.url over TLS ([stores.rel.tls]): "
        "the server's certificate was refused: "
    )
    assert "stores.rel.tls.ca_file must hold the CA" in message
    assert tls_mariadb_server.password not in message


@pytest.mark.parametrize(
    ("names", "expired", "reason", "hint"),
    [
        (("localhost", "127.0.0.1"), True, "certificate has expired", "needs a valid certificate"),
        (
            ("db.example.test",),
            False,
            "Hostname mismatch, certificate is not valid for 'localhost'",
            "stores.rel.tls.verify_identity = false",
        ),
    ],
)
async def test_a_bad_server_certificate_is_refused_with_the_reason(
    bad_cert_mariadb: TlsMariadb,
    tmp_path: Path,
    names: tuple[str, ...],
    expired: bool,
    reason: str,
    hint: str,
) -> None:
    issue(bad_cert_mariadb, tmp_path, *names, expired=expired)
    adapter = make_adapter(bad_cert_mariadb.url(), tls={"ca_file": bad_cert_mariadb.ca_file})
    message = await refusal(adapter)
    assert "over TLS ([stores.rel.tls])" in message
    assert reason in message
    assert hint in message
    assert bad_cert_mariadb.password not in message


async def test_verify_identity_false_skips_the_name_only(
    bad_cert_mariadb: TlsMariadb, tmp_path: Path
) -> None:
    """For a server addressed by a name (or IP) its certificate lacks: the chain still counts."""
    tls = {"ca_file": bad_cert_mariadb.ca_file, "verify_identity": False}
    issue(bad_cert_mariadb, tmp_path, "db.example.test")
    adapter = make_adapter(bad_cert_mariadb.url("127.0.0.1"), tls=tls)
    await adapter.start()
    await adapter.aclose()
    issue(bad_cert_mariadb, tmp_path, "db.example.test", expired=True)
    assert "certificate has expired" in await refusal(make_adapter(bad_cert_mariadb.url(), tls=tls))


async def test_a_secondary_refused_over_tls_names_its_key(
    tls_mariadb_server: TlsMariadb, bad_cert_mariadb: TlsMariadb, tmp_path: Path
) -> None:
    issue(bad_cert_mariadb, tmp_path, "localhost", "127.0.0.1", expired=True)
    adapter = make_adapter(
        tls_mariadb_server.url(),
        secondaries=[bad_cert_mariadb.url()],
        tls={"ca_file": tls_mariadb_server.ca_file},  # the same CA signs both
    )
    await adapter.start()
    try:
        [(name, problem)] = await adapter.optional_checks()
    finally:
        await adapter.aclose()
    assert name == f"store rel secondary localhost:{bad_cert_mariadb.port}"
    assert problem is not None
    assert "the MariaDB server of stores.rel.secondaries[0] over TLS" in problem
    assert "certificate has expired" in problem
    assert bad_cert_mariadb.password not in problem


@pytest.mark.parametrize(
    ("files", "key", "words"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "No such file"),
        ({"ca_file": __file__}, "ca_file", "cannot be used"),
        ({"cert_file": "EXPIRED"}, "cert_file", "expired on"),
        ({"cert_file": __file__}, "cert_file", "not a PEM certificate"),
        ({"key_file": "/nonexistent/key.pem"}, "key_file", "without stores.rel.tls.cert_file"),
    ],
)
def test_a_tls_file_that_cannot_be_used_stops_the_settings_naming_its_key(
    tmp_path: Path, files: dict[str, str], key: str, words: str
) -> None:
    """Found when the table is parsed: no server is needed, none is connected to."""
    import trustme

    if files.get("cert_file") == "EXPIRED":
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        issued = trustme.CA().issue_cert(
            "beds-node@example.test", not_before=past - dt.timedelta(days=1), not_after=past
        )
        files["cert_file"] = str(tmp_path / "client.pem")
        issued.private_key_and_cert_chain_pem.write_to_path(files["cert_file"])
    password = "s3cret-never-shown"
    with pytest.raises(ConfigError) as refused:
        make_adapter(f"mysql://app:{password}@127.0.0.1:1/beds", tls=files)
    assert refused.value.key == f"stores.rel.tls.{key}"
    assert refused.value.file == "beds.toml"
    assert str(refused.value).startswith(f"stores.rel.tls.{key}: ")
    assert words in str(refused.value)
    assert password not in str(refused.value)


async def test_a_bad_tls_file_fails_the_node_check_before_any_database_connection(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    config = node_config(
        tmp_path, tls_broker, "mysql://app:pw@127.0.0.1:1/beds", 'ca_file = "/nonexistent/ca.pem"'
    )
    checks = await BedsNode(config, plugin_manager=rel_plugins()).check()
    assert (checks[-1].name, checks[-1].status) == ("adapter rel", "failed")
    assert "stores.rel.tls.ca_file" in checks[-1].detail
    assert not [check for check in checks if check.name == "store rel"]
