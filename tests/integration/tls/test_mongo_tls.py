"""MongoDB over TLS: the REC adapter against real TLS-only SecantusDB servers.

Three servers run for the module, on free loopback ports, with certificates made for this run:
one that verifies nothing of the client, one that requires a client certificate, and one whose
certificate has expired. Every certificate is for ``localhost`` only, so ``127.0.0.1`` is the
wrong host name. Each refusal must say why in words and name the key to change, and no message
or log line may repeat the URI's password.
"""

from __future__ import annotations

import gc
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from loguru import logger
from pymongo import AsyncMongoClient

from beds import hookimpl
from beds.config import load_config
from beds.envelopes import Operation
from beds.errors import ConfigError, StoreUnavailable
from beds.namaste import CallContext, StoreSettings
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.registry import TemplateRegistry
from beds.templates.validate import validate_fetch, validate_write
from beds.testing import unique_name
from beds_rec import RecAdapter
from tests.integration.tls.mongo_servers import MongoTlsFiles, Server, make_files, tls_mongos

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]

PASSWORD = "Pw-8cz2Lq-not-echoed"
"""In the URI of every refused connection: it must appear in no message and no log line."""
TIMEOUT = 1.5
"""server_selection_timeout of the refusals: a refused handshake is known well before."""
CTX = CallContext(event_id="test.dev.tls")

NOTE = """
name = "tls_note"
store = "rec"
tla = "tln"
key = ["id"]
[rec]
collection = "tln_notes"
[fields.id]
type = "str"
generated = true
[fields.text]
type = "str"
[operations.create]
params = ["text"]
returns = ["id", "text"]
[queries.by_text]
params = ["text"]
max_limit = 5
filter = ["text"]
"""


@attrs.frozen
class Servers:
    files: MongoTlsFiles
    open: int
    """Verifies nothing of the client."""
    mutual: int
    """Requires a client certificate signed by the run's CA."""
    expired: int
    """Presents an expired certificate."""


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    files = make_files()
    try:
        with tls_mongos(
            Server(files.server_cert, files.server_key),
            Server(files.server_cert, files.server_key, client_ca_file=files.ca_file),
            Server(files.expired_cert, files.expired_key),
        ) as (open_port, mutual, expired):
            yield Servers(files=files, open=open_port, mutual=mutual, expired=expired)
    finally:
        shutil.rmtree(files.folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def collect_cancelled_handshakes() -> Iterator[None]:
    """Close the sockets pymongo leaves behind when a client closes during a TLS handshake.

    ``client.close()`` cancels the monitor's connection while its handshake runs, and pymongo
    leaves that socket to the garbage collector (as in PYTHON-5867 for refused connects). Left
    there, it would fail a later test with an unclosed-socket warning, and keep the server's
    accept thread waiting for the rest of the handshake.
    """
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket.socket", ResourceWarning)
        gc.collect()


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Every line BEDS logs during the test."""
    lines: list[str] = []
    logger.enable("beds")
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)
    logger.disable("beds")


def settings(uri: str, *, timeout: float = 10, **options: Any) -> StoreSettings:
    table = {"uri": uri, "database": unique_name("beds_tls"), "server_selection_timeout": timeout}
    return StoreSettings(store="rec", options={**table, **options}, file="beds.toml")


def note() -> Any:
    registry = TemplateRegistry()
    return registry.add_text(NOTE, source="test_mongo_tls.py")


async def round_trip(adapter: RecAdapter) -> None:
    """Create a note and fetch it back, then drop the test's database."""
    template = note()
    adapter.prepare(template)
    await adapter.start()
    try:
        await adapter.apply_schema([])
        text = unique_name("over TLS")
        created = await adapter.create(
            template, validate_write(template, Operation.CREATE, {"text": text}), CTX
        )
        query = validate_fetch(template, {"query": "by_text", "params": {"text": text}})
        assert await adapter.fetch(template, query, CTX) == [created]
    finally:
        client: AsyncMongoClient[dict[str, Any]] | None = adapter._client
        if client is not None:
            await client.drop_database(adapter.settings.database)
        await adapter.aclose()


async def test_the_adapter_works_over_tls_with_a_ca_file(servers: Servers) -> None:
    tls = {"ca_file": servers.files.ca_file}
    await round_trip(RecAdapter(settings(f"mongodb://localhost:{servers.open}/", tls=tls)))


async def test_uri_options_turn_tls_on_too(servers: Servers) -> None:
    uri = f"mongodb://localhost:{servers.open}/?tls=true&tlsCAFile={servers.files.ca_file}"
    adapter = RecAdapter(settings(uri))
    assert adapter.settings.tls_key == "stores.rec.uri"
    await round_trip(adapter)


async def test_the_adapter_sends_its_client_certificate(servers: Servers) -> None:
    tls = {"ca_file": servers.files.ca_file, "cert_file": servers.files.client_pem}
    await round_trip(RecAdapter(settings(f"mongodb://localhost:{servers.mutual}/", tls=tls)))


async def refused(store: StoreSettings, logged: list[str]) -> str:
    """Start an adapter that must fail; its message and details, which hold no password."""
    adapter = RecAdapter(store)
    with pytest.raises(StoreUnavailable) as caught:
        await adapter.start()
    error = caught.value
    message = f"{error.message}: {', '.join(error.details)}"  # as the IPL checklist shows it
    assert PASSWORD not in message
    assert PASSWORD not in repr(error.__cause__)  # pymongo's message: host and port only
    assert not [line for line in logged if PASSWORD in line]
    return message


@pytest.mark.parametrize(
    ("case", "server", "host", "tls", "words"),
    [
        (
            "unknown CA",
            "open",
            "localhost",
            {"ca_file": "other_ca_file"},
            "unable to get local issuer certificate",
        ),
        ("expired", "expired", "localhost", {"ca_file": "ca_file"}, "certificate has expired"),
        ("wrong host", "open", "127.0.0.1", {"ca_file": "ca_file"}, "mismatch"),
    ],
)
async def test_a_server_certificate_that_must_not_be_trusted_is_refused_with_the_reason(
    servers: Servers,
    logged: list[str],
    case: str,
    server: str,
    host: str,
    tls: dict[str, str],
    words: str,
) -> None:
    port = getattr(servers, server)
    files = {key: getattr(servers.files, name) for key, name in tls.items()}
    uri = f"mongodb://beds:{PASSWORD}@{host}:{port}/"
    message = await refused(settings(uri, timeout=TIMEOUT, tls=files), logged)
    assert message.startswith("the MongoDB server cannot be reached over TLS: ")
    assert f"{host}:{port}: the server's certificate was refused: " in message
    assert words in message
    assert message.endswith("(key stores.rec.tls)")


async def test_a_missing_client_certificate_is_refused_with_the_reason(
    servers: Servers, logged: list[str]
) -> None:
    uri = f"mongodb://beds:{PASSWORD}@localhost:{servers.mutual}/"
    tls = {"ca_file": servers.files.ca_file}
    message = await refused(settings(uri, timeout=TIMEOUT, tls=tls), logged)
    assert message.startswith(
        f"the MongoDB server cannot be reached over TLS: localhost:{servers.mutual}: the server "
    )
    # TLS 1.3: the refusal is an alert ("requires") or, if the connection closes first, no
    # more than a closed connection ("may require").
    assert message.endswith("a client certificate, and none was sent (key stores.rec.tls)")


async def test_a_refusal_names_the_uri_when_the_uri_turns_tls_on(
    servers: Servers, logged: list[str]
) -> None:
    uri = (
        f"mongodb://beds:{PASSWORD}@localhost:{servers.open}/"
        f"?tls=true&tlsCAFile={servers.files.other_ca_file}"
    )
    message = await refused(settings(uri, timeout=TIMEOUT), logged)
    assert "the server's certificate was refused" in message
    assert message.endswith("(key stores.rec.uri)")


async def test_a_plaintext_client_to_the_tls_server_fails_clearly(
    servers: Servers, logged: list[str]
) -> None:
    uri = f"mongodb://beds:{PASSWORD}@localhost:{servers.open}/"
    message = await refused(settings(uri, timeout=TIMEOUT), logged)
    assert message.startswith(f"the MongoDB server cannot be reached: localhost:{servers.open}: ")
    assert "if the server accepts TLS only, turn TLS on with [stores.rec.tls]" in message
    assert message.endswith("(key stores.rec.uri)")


class NotePlugin:
    """One REC template, so that the node builds the REC store (and no other)."""

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add_text(NOTE, source="test_mongo_tls.py")


async def test_the_node_check_says_why_the_store_is_refused(
    servers: Servers, amqp_url: str, tmp_path: Path, logged: list[str]
) -> None:
    """At IPL (``beds check``), the reason is the ``store rec`` line of the checklist."""
    import beds_rec.plugin

    path = tmp_path / "beds.toml"
    path.write_text(
        f"""schema_version = 1
[node]
env = "{unique_name("tls")}"
[amqp]
url = "{amqp_url}"
[lineage]
enabled = false
[stores.rec]
uri = "mongodb://beds:{PASSWORD}@localhost:{servers.expired}/"
database = "beds_tls"
server_selection_timeout = {TIMEOUT}
[stores.rec.tls]
ca_file = "{servers.files.ca_file}"
""",
        encoding="utf-8",
    )
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(beds_rec.plugin, name="rec")
    pm.register(NotePlugin(), name="notes")
    checks = await BedsNode(load_config(path, environ={}), plugin_manager=pm).check()
    failed = checks[-1]
    assert (failed.name, failed.status) == ("store rec", "failed")
    assert failed.detail == (
        f"the MongoDB server cannot be reached over TLS: localhost:{servers.expired}: the "
        "server's certificate was refused: certificate has expired (key stores.rec.tls)"
    )
    assert not [line for line in logged if PASSWORD in line]
    assert any("certificate has expired" in line for line in logged)


# -- files that cannot be used: refused when the settings are read, before connecting -----


@pytest.mark.parametrize(
    ("tls", "key", "words"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "stores.rec.tls.ca_file", "No such file"),
        ({"ca_file": "__file__"}, "stores.rec.tls.ca_file", "cannot be used"),
        ({"cert_file": "__file__"}, "stores.rec.tls.cert_file", "not a PEM certificate"),
        ({"cert_file": "expired_client_pem"}, "stores.rec.tls.cert_file", "expired on"),
        ({"cert_file": "server_cert"}, "stores.rec.tls.cert_file", "holds no private key"),
        (
            {"cert_file": "encrypted_client_pem"},
            "stores.rec.tls.cert_file",
            "holds an encrypted private key",
        ),
        ({"cert_file": "client_pem", "key_file": "server_key"}, "stores.rec.tls.key_file", "one"),
    ],
)
def test_a_tls_file_that_cannot_be_used_names_its_key(
    servers: Servers, tls: dict[str, str], key: str, words: str
) -> None:
    files = {
        name: __file__ if value == "__file__" else getattr(servers.files, value, value)
        for name, value in tls.items()
    }
    uri = f"mongodb://beds:{PASSWORD}@127.0.0.1:1/"  # nothing listens: nothing is tried
    with pytest.raises(ConfigError) as caught:
        RecAdapter(settings(uri, tls=files))
    assert caught.value.key == key
    assert caught.value.file == "beds.toml"
    assert words in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_a_uri_tls_file_that_cannot_be_used_names_the_uri(servers: Servers) -> None:
    uri = (
        f"mongodb://beds:{PASSWORD}@127.0.0.1:1/?tls=true"
        f"&tlsCertificateKeyFile={servers.files.expired_client_pem}"
    )
    with pytest.raises(ConfigError) as caught:
        RecAdapter(settings(uri))
    assert caught.value.key == "stores.rec.uri"
    assert "option tlsCertificateKeyFile: " in str(caught.value)
    assert "expired on" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_a_tls_client_to_a_plaintext_server_fails_clearly(
    mongo_server_uri: str, logged: list[str]
) -> None:
    """The session's plaintext server (SecantusDB waits for the rest of what it takes for a
    message; mongod closes the connection)."""
    host = urlsplit(mongo_server_uri).netloc.rpartition("@")[2]
    uri = f"mongodb://beds:{PASSWORD}@{host}/"
    message = await refused(settings(uri, timeout=TIMEOUT, tls={}), logged)
    assert message.startswith(f"the MongoDB server cannot be reached over TLS: {host}: ")
    assert "does not speak TLS" in message
    assert message.endswith("(key stores.rec.tls)")
