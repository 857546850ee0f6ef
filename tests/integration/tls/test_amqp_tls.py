"""AMQP over TLS against a real TLS-only RabbitMQ node, and the certificate checks a node makes.

The refusals are shown against a loopback TLS listener presenting the wrong certificate (an
unknown CA, an expired one, another host's), the same check the node makes of RabbitMQ.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from beds.client import BedsClient
from beds.config.model import AmqpSettings, AmqpTlsSettings
from beds.errors import BrokerUnavailable, ConfigError
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.testing import unique_name
from beds.transport.amqp import connect_to
from beds.transport.tls import amqp_context
from tests.integration.amqp.helpers import MemoryPlugin
from tests.integration.tls.helpers import TlsBroker, tls_listener, tls_node_config

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def tls(broker: TlsBroker, **files: str) -> AmqpSettings:
    return AmqpSettings(url=broker.url(), tls=AmqpTlsSettings(ca_file=broker.ca_file, **files))


async def test_a_node_serves_and_a_client_calls_over_tls(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    env = unique_name("tls")
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(MemoryPlugin())
    config = tls_node_config(tls_broker, tmp_path, env)
    async with (
        BedsNode(config, plugin_manager=pm) as node,
        BedsClient(
            tls_broker.url(), env=env, timeout=10, ssl_context=amqp_context(config.amqp)
        ) as client,
    ):
        assert node.ready
        answer = await client.ping()
        assert answer.ok, answer.error
        created = await client.create("note", {"text": "over TLS"})
        assert created["id"]
    [amqp] = [check for check in node.checks if check.name == "rabbitmq"]
    assert amqp.detail.startswith("amqps://guest:***@localhost:")


async def test_plaintext_to_the_tls_port_fails_clearly(tls_broker: TlsBroker) -> None:
    plain = AmqpSettings(url=f"amqp://guest:guest@127.0.0.1:{tls_broker.port}/", connect_timeout=3)
    with pytest.raises(BrokerUnavailable, match="is not reachable") as refused:
        await connect_to(plain)
    assert "guest:guest" not in str(refused.value)


@pytest.mark.parametrize("case", ["unknown CA", "expired", "another host"])
async def test_a_certificate_the_node_must_not_trust_is_refused_with_the_reason(
    tls_broker: TlsBroker, tmp_path: Path, case: str
) -> None:
    import trustme

    signer = trustme.CA() if case == "unknown CA" else tls_broker.ca
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    issued = (
        signer.issue_cert(
            "localhost", "127.0.0.1", not_before=past - dt.timedelta(days=1), not_after=past
        )
        if case == "expired"
        else signer.issue_cert("rabbit.example.test" if case == "another host" else "localhost")
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    expected = {
        "unknown CA": "unable to get local issuer certificate",
        "expired": "certificate has expired",
        "another host": "Hostname mismatch",
    }[case]
    async with tls_listener(str(cert), str(key)) as port:
        settings = AmqpSettings(
            url=f"amqps://guest:guest@localhost:{port}/",
            connect_timeout=3,
            tls=AmqpTlsSettings(ca_file=tls_broker.ca_file),
        )
        with pytest.raises(BrokerUnavailable) as refused:
            await connect_to(settings)
    message = str(refused.value)
    assert "the server's certificate was refused" in message
    assert expected in message


@pytest.mark.parametrize(
    ("files", "key"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "amqp.tls.ca_file"),
        ({"ca_file": "__file__"}, "amqp.tls.ca_file"),
        ({"cert_file": "/nonexistent/cert.pem"}, "amqp.tls.cert_file"),
        ({"key_file": "/nonexistent/key.pem"}, "amqp.tls.key_file"),
    ],
)
def test_a_tls_file_that_cannot_be_used_names_its_key(
    tls_broker: TlsBroker, files: dict[str, str], key: str
) -> None:
    files = {name: (__file__ if value == "__file__" else value) for name, value in files.items()}
    settings = AmqpSettings(url=tls_broker.url(), tls=AmqpTlsSettings(**files))
    with pytest.raises(ConfigError) as refused:
        amqp_context(settings)
    assert refused.value.key == key


def test_tls_files_need_an_amqps_url() -> None:
    settings = AmqpSettings(url="amqp://127.0.0.1/", tls=AmqpTlsSettings(ca_file="/x/ca.pem"))
    with pytest.raises(ConfigError, match=r"amqp\.url is not amqps"):
        amqp_context(settings)


def test_the_handshake_reason_is_found_in_a_chain_that_loops() -> None:
    import ssl

    from beds.transport.tls import handshake_problem

    first, second = ValueError("a"), OSError("b")
    first.__context__, second.__context__ = second, first  # asyncio can leave such loops
    assert handshake_problem(first) is None
    refused = ssl.SSLCertVerificationError(1, "verify failed")
    refused.verify_message = "certificate has expired"
    second.__cause__ = refused
    assert (
        handshake_problem(first) == "the server's certificate was refused: certificate has expired"
    )
