"""The production policy, decided from configuration alone: nothing here connects anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds.config import load_config
from beds.node import BedsNode
from beds.policy import findings, is_loopback

GOOD = {
    "BEDS__AMQP__URL": "amqps://app:pw@mq.internal:5671/prod",
    "BEDS__STORES__REL__URL": "mysql://app:pw@127.0.0.1:3306/beds",
    "BEDS__STORES__REC__URI": "mongodb://app:pw@db1.internal:27017,db2.internal/?tls=true",
}


def keys(environ: dict[str, str]) -> list[str]:
    return [finding.key for finding in findings(load_config(None, environ=environ))]


def test_a_well_set_configuration_has_no_finding() -> None:
    assert keys(GOOD) == []


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"BEDS__AMQP__URL": "amqps://guest:guest@mq.internal/"}, "amqp.url", "guest"),
        ({"BEDS__AMQP__URL": "amqps://mq.internal/"}, "amqp.url", "guest"),  # no user: guest
        ({"BEDS__AMQP__URL": "amqp://app:pw@mq.internal/"}, "amqp.url", "plaintext"),
        ({"BEDS__STORES__REL__URL": "mysql://app@127.0.0.1/beds"}, "stores.rel.url", "password"),
        (
            {"BEDS__STORES__REL__URL": "mysql://app:pw@db.internal/beds"},
            "stores.rel.url",
            "plaintext",
        ),
        (
            {"BEDS__STORES__REL__SECONDARIES": '["mysql://app@127.0.0.2/beds"]'},
            "stores.rel.secondaries[0]",
            "password",
        ),
        ({"BEDS__STORES__REC__URI": "mongodb://db1.internal/"}, "stores.rec.uri", "plaintext"),
        ({"BEDS__STORES__REC__URI": "mongodb://127.0.0.1,db2/"}, "stores.rec.uri", "db2"),
    ],
)
def test_each_refusal_names_its_key(change: dict[str, str], key: str, words: str) -> None:
    found = findings(load_config(None, environ={**GOOD, **change}))
    assert [finding.key for finding in found] == [key]
    assert words in found[0].problem


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.1", "localhost", "LOCALHOST", "::1", "[::1]", "", None]
)
def test_loopback_hosts(host: str | None) -> None:
    assert is_loopback(host)


@given(st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True) | st.ip_addresses().map(str))
def test_nothing_else_is_loopback_and_nothing_is_resolved(host: str) -> None:
    expected = host == "localhost" or host.startswith("127.") or host == "::1"
    assert is_loopback(host) == expected


async def test_production_refuses_before_any_connection(tmp_path: Path) -> None:
    """The policy fails first, so the node never tries the connection (a loopback port
    nothing listens on, in case it did)."""
    config_file = tmp_path / "beds.toml"
    config_file.write_text('schema_version = 1\n[node]\nmode = "production"\n', encoding="utf-8")
    config = load_config(
        config_file,
        environ={
            "BEDS__AMQP__URL": "amqp://guest:guest@127.0.0.1:1/",
            "BEDS__STORES__REL__URL": "mysql://root@127.0.0.1:1/beds",
        },
    )
    checks = await BedsNode(config).check()
    assert [(check.name, check.status) for check in checks] == [
        ("config", "ok"),
        ("policy", "failed"),
    ]
    assert checks[-1].detail.startswith("amqp.url logs in as RabbitMQ's guest account")
    assert "stores.rel.url has no password" in checks[-1].detail
