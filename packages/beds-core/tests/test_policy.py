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
    "BEDS__CONTROL__TRUSTED_USERS": '["beds-prod-appServer", "beds-prod-admin"]',
    "BEDS__READS__CURSOR_SECRET": "s3cr3t-of-the-environment",
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
            "plaintext connection to db.internal: add [stores.rel.tls]",
        ),
        (
            {"BEDS__STORES__REL__SECONDARIES": '["mysql://app:pw@replica.internal/beds"]'},
            "stores.rel.secondaries[0]",
            "plaintext connection to replica.internal: add [stores.rel.tls]",
        ),
        (
            {
                "BEDS__STORES__REL__URL": "mysql://app:pw@db.internal/beds",
                "BEDS__STORES__REL__TLS__VERIFY_IDENTITY": "false",
            },
            "stores.rel.tls.verify_identity",
            "certificate of db.internal is not checked against the host name",
        ),
        (
            {"BEDS__STORES__REL__SECONDARIES": '["mysql://app@127.0.0.2/beds"]'},
            "stores.rel.secondaries[0]",
            "password",
        ),
        ({"BEDS__STORES__REC__URI": "mongodb://db1.internal/"}, "stores.rec.uri", "plaintext"),
        ({"BEDS__STORES__REC__URI": "mongodb://127.0.0.1,db2/"}, "stores.rec.uri", "db2"),
        (
            {"BEDS__STORES__REL__DATABASES__WH__URL": "mysql://wh:pw@wh.internal/warehouse"},
            "stores.rel.databases.wh.url",
            "plaintext connection to wh.internal: add [stores.rel.databases.wh.tls]",
        ),
        (
            {"BEDS__STORES__REL__DATABASES__WH__URL": "mysql://wh@127.0.0.1/warehouse"},
            "stores.rel.databases.wh.url",
            "password",
        ),
        (
            {"BEDS__STORES__REC__DATABASES__COLD__URI": "mongodb://app:pw@cold.internal/"},
            "stores.rec.databases.cold.uri",
            "plaintext connection to cold.internal",
        ),
    ],
)
def test_each_refusal_names_its_key(change: dict[str, str], key: str, words: str) -> None:
    found = findings(load_config(None, environ={**GOOD, **change}))
    assert [finding.key for finding in found] == [key]
    assert words in found[0].problem


@pytest.mark.parametrize(
    ("urls", "expected"),
    [
        ("amqps://app:pw@mq1.internal:5671/prod amqps://app:pw@mq2.internal:5671/prod", []),
        ("amqp://app:pw@127.0.0.1:5672/prod amqp://app:pw@127.0.0.1:5673/prod", []),
        ("amqp://app:pw@127.0.0.1:5672/prod amqp://app:pw@mq2.internal:5672/prod", [1]),
        ("amqp://app:pw@mq1.internal/prod amqp://app:pw@mq2.internal/prod", [0, 1]),
    ],
)
def test_every_broker_of_amqp_urls_is_checked_for_plaintext(urls: str, expected: list[int]) -> None:
    environ = {name: value for name, value in GOOD.items() if name != "BEDS__AMQP__URL"}
    found = findings(load_config(None, environ={**environ, "BEDS__AMQP__URLS": urls}))
    assert [finding.key for finding in found] == [f"amqp.urls[{i}]" for i in expected]
    assert all("plaintext" in finding.problem and "pw" not in finding.problem for finding in found)


@pytest.mark.parametrize("tls", ["", 'ca_file = "/etc/beds/db-ca.pem"', "verify_identity = true"])
def test_mariadb_over_tls_to_another_host_is_fine(tmp_path: Path, tls: str) -> None:
    config_file = tmp_path / "beds.toml"
    config_file.write_text(
        "schema_version = 1\n[stores.rel]\n"
        'url = "mysql://app:pw@db.internal/beds"\n'
        'secondaries = ["mysql://app:pw@replica.internal/beds"]\n'
        f"[stores.rel.tls]\n{tls}\n",
        encoding="utf-8",
    )
    environ = {name: value for name, value in GOOD.items() if "__REL__" not in name}
    assert findings(load_config(config_file, environ=environ)) == []


def test_verify_identity_false_on_loopback_only_is_fine() -> None:
    loopback = {"BEDS__STORES__REL__TLS__VERIFY_IDENTITY": "false"}  # GOOD's url is 127.0.0.1
    assert keys({**GOOD, **loopback}) == []


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


REMOTE_REC = "mongodb://app:pw@db1.internal:27017,db2.internal/"


@pytest.mark.parametrize(
    "change",
    [
        # Not BEDS__STORES__REC__TLS__CA_FILE: a name ending in _FILE reads the value from a file.
        {"BEDS__STORES__REC__URI": REMOTE_REC, "BEDS__STORES__REC__TLS": '{ca_file = "/x/ca.pem"}'},
        {"BEDS__STORES__REC__URI": REMOTE_REC, "BEDS__STORES__REC__TLS": "{}"},  # system CAs
        {"BEDS__STORES__REC__URI": REMOTE_REC + "?ssl=true"},
        {"BEDS__STORES__REC__URI": REMOTE_REC + "?TLS=True"},
        {"BEDS__STORES__REC__URI": REMOTE_REC + "?tlsCAFile=/etc/ca.pem"},  # implies TLS
        {"BEDS__STORES__REC__URI": "mongodb+srv://app:pw@cluster.internal/"},
        {"BEDS__STORES__REC__URI": "mongodb://app:pw@[::1]:27017,localhost/"},
    ],
)
def test_rec_over_tls_or_on_loopback_has_no_finding(change: dict[str, str]) -> None:
    """[stores.rec.tls] turns TLS on as well as tls=true in the URI (policy never connects)."""
    assert keys({**GOOD, **change}) == []


@pytest.mark.parametrize(
    ("uri", "hosts"),
    [
        (REMOTE_REC + "?tls=false", "db1.internal, db2.internal"),
        ("mongodb+srv://app:pw@cluster.internal/?tls=false", "cluster.internal"),
        (REMOTE_REC + "?tlsCAFile=/etc/ca.pem&tls=false", "db1.internal, db2.internal"),
        ("mongodb://app:pw@[2001:db8::1]:27017/", "2001:db8::1"),
    ],
)
def test_rec_with_tls_turned_off_is_refused(uri: str, hosts: str) -> None:
    found = findings(load_config(None, environ={**GOOD, "BEDS__STORES__REC__URI": uri}))
    assert [(finding.key, finding.problem) for finding in found] == [
        (
            "stores.rec.uri",
            f"is a plaintext connection to {hosts}: add tls=true or a [stores.rec.tls] table",
        )
    ]


def test_internal_events_believed_from_anyone_are_findings() -> None:
    untrusting = {name: value for name, value in GOOD.items() if "TRUSTED" not in name}
    assert keys(untrusting) == ["control.trusted_users"]
    # A role that stores lineage must name whose batches it believes.
    logs_role = {**GOOD, "BEDS__NODE__ROLE": "admin"}
    assert keys(logs_role) == ["lineage.trusted_users"]
    assert keys({**logs_role, "BEDS__LINEAGE__TRUSTED_USERS": '["beds-prod-appServer"]'}) == []
    # No control channel, nothing to trust.
    assert keys({**untrusting, "BEDS__CONTROL__ENABLED": "false"}) == []


def test_a_private_key_any_user_can_read_is_a_finding(tmp_path: Path) -> None:
    key = tmp_path / "client.key"  # the policy reads permissions, never the key
    key.write_text("-----BEGIN PRIVATE KEY-----\n", encoding="utf-8")
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    signing = keys_dir / "k1.pem"
    signing.write_text("not read by the policy", encoding="utf-8")
    environ = {**GOOD, "BEDS__AUTH__KEYS_DIR": str(keys_dir), "BEDS__AUTH__SIGNING_KEY_ID": "k1"}
    # A file, not BEDS__AMQP__TLS__KEY_FILE: a variable ending in _FILE names a secret's file.
    config_file = tmp_path / "beds.toml"
    config_file.write_text(
        f'schema_version = 1\n[amqp.tls]\ncert_file = "{key}"\nkey_file = "{key}"\n',
        encoding="utf-8",
    )
    for path in (key, signing):
        path.chmod(0o644)
    found = findings(load_config(config_file, environ=environ))
    assert [finding.key for finding in found] == ["amqp.tls.key_file", "auth.keys_dir"]
    assert all("any user can read" in finding.problem for finding in found)
    for path in (key, signing):
        path.chmod(0o600)
    assert findings(load_config(config_file, environ=environ)) == []


def test_an_identity_providers_short_keys_are_findings(tmp_path: Path) -> None:
    import base64
    import json

    def jwk_rsa(kid: str, bits: int) -> dict[str, str]:
        modulus = (1 << (bits - 1)) | 1
        n = base64.urlsafe_b64encode(modulus.to_bytes(bits // 8, "big")).rstrip(b"=").decode()
        return {"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"}

    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps(
            {
                "keys": [
                    jwk_rsa("weak", 1024),
                    jwk_rsa("strong", 2048),
                    {"kty": "EC", "kid": "p256", "crv": "P-256", "x": "", "y": ""},
                    {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": ""},
                ]
            }
        ),
        encoding="utf-8",
    )
    config_file = tmp_path / "beds.toml"  # not BEDS__…_FILE: that names a secret's file
    config_file.write_text(f'schema_version = 1\n[auth.oidc]\njwks_file = "{jwks}"\n')
    found = findings(load_config(config_file, environ=GOOD))
    assert [(finding.key, finding.problem) for finding in found] == [
        ("auth.oidc.jwks_file", "key 'weak' is RSA of 1024 bits: at least 2048 are needed")
    ]
