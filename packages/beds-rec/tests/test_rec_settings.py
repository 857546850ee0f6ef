from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import AutoReconnect

from beds.errors import ConfigError
from beds.namaste import StoreSettings
from beds_rec.connect import _masked, _reason, client_options
from beds_rec.settings import RecSettings, RecTlsSettings, parse_settings


def settings(**options: Any) -> StoreSettings:
    return StoreSettings(store="rec", options=options, file="beds.toml")


def test_defaults_select_the_embedded_server() -> None:
    parsed = parse_settings(settings(database="beds_dev"))
    assert parsed == RecSettings(
        uri=None,
        database="beds_dev",
        server_selection_timeout=5.0,
        embedded_path=Path(".beds/secantus"),
    )
    assert parsed.embedded


def test_embedded_keyword_and_uri() -> None:
    assert parse_settings(settings(uri="embedded", database="d")).uri is None
    parsed = parse_settings(
        settings(uri="mongodb://127.0.0.1:27017/", database="d", server_selection_timeout=1)
    )
    assert parsed.uri == "mongodb://127.0.0.1:27017/"
    assert parsed.server_selection_timeout == 1.0
    assert not parsed.embedded


def test_production_flag_is_kept() -> None:
    options = {"database": "d", "uri": "mongodb://db.example:27017/"}
    parsed = parse_settings(StoreSettings(store="rec", options=options, production=True))
    assert parsed.production


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"database": "d", "url": "mongodb://x/"}, "stores.rec.url", "is not a known key"),
        ({}, "stores.rec.database", "is required"),
        ({"database": ""}, "stores.rec.database", "database name"),
        ({"database": "a.b"}, "stores.rec.database", "database name"),
        ({"database": 3}, "stores.rec.database", "must be a string, got int"),
        ({"database": "d", "uri": 5}, "stores.rec.uri", "must be a string"),
        ({"database": "d", "uri": "mysql://x/"}, "stores.rec.uri", "mongodb://"),
        ({"database": "d", "uri": "mongodb://h:99999/"}, "stores.rec.uri", "not a valid"),
        ({"database": "d", "uri": "mongodb://h/?bogusOption=1"}, "stores.rec.uri", "not a valid"),
        (
            {"database": "d", "server_selection_timeout": 0},
            "stores.rec.server_selection_timeout",
            "positive",
        ),
        (
            {"database": "d", "server_selection_timeout": True},
            "stores.rec.server_selection_timeout",
            "must be a number, got bool",
        ),
        (
            {"database": "d", "server_selection_timeout": "5"},
            "stores.rec.server_selection_timeout",
            "must be a number, got str",
        ),
        ({"database": "d", "embedded_path": ""}, "stores.rec.embedded_path", "non-empty"),
        ({"database": "d", "embedded_path": 1}, "stores.rec.embedded_path", "must be a string"),
    ],
)
def test_errors_name_the_key_and_file(options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(**options))
    assert caught.value.key == key
    assert caught.value.file == "beds.toml"
    assert str(caught.value).startswith(f"{key}: ")
    assert words in str(caught.value)
    assert str(caught.value).endswith(f"(file beds.toml, key {key})")


def test_uri_error_does_not_leak_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", uri="mongodb://user:s3cret@h:99999/"))
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_the_first_unknown_key_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", zeta=1, alpha=2))
    assert caught.value.key == "stores.rec.alpha"


@given(
    st.text(min_size=1, max_size=20).filter(
        lambda k: k not in {"uri", "database", "server_selection_timeout", "embedded_path"}
    )
)
def test_any_unknown_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", **{key: 1}))
    assert caught.value.key == f"stores.rec.{key}"


def test_idempotency_is_on_by_default_and_can_be_turned_off() -> None:
    assert parse_settings(settings(database="d")).idempotency is True
    assert parse_settings(settings(database="d", idempotency=False)).idempotency is False
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", idempotency=1))
    assert caught.value.key == "stores.rec.idempotency"
    assert "must be true or false" in str(caught.value)


# -- TLS: [stores.rec.tls] or the URI's options ------------------------------------------------

REMOTE = "mongodb://beds:s3cret-pw@db.example:27017/"


@pytest.mark.parametrize(
    ("uri", "tls", "key"),
    [
        (REMOTE, {}, "stores.rec.tls"),  # the table alone turns TLS on (the system's CAs)
        (REMOTE + "?tls=true", None, "stores.rec.uri"),
        (REMOTE + "?ssl=true", None, "stores.rec.uri"),
        ("mongodb+srv://beds:pw@cluster.example/", None, "stores.rec.uri"),
        ("mongodb+srv://beds:pw@cluster.example/?tls=false", None, None),
        (REMOTE, None, None),
        (REMOTE + "?tls=false", None, None),
    ],
)
def test_the_key_that_turns_tls_on(uri: str, tls: dict[str, str] | None, key: str | None) -> None:
    options: dict[str, Any] = {"database": "d", "uri": uri}
    if tls is not None:
        options["tls"] = tls
    parsed = parse_settings(settings(**options))
    assert parsed.tls_key == key
    assert (parsed.tls is not None) == (tls is not None)


def test_the_client_gets_the_tls_files_of_the_table() -> None:
    tls = RecTlsSettings(ca_file="/etc/beds/ca.pem", cert_file="/etc/beds/node.pem")
    options = client_options(RecSettings(uri=REMOTE, database="d", tls=tls))
    assert options == {
        "serverSelectionTimeoutMS": 5000,
        "appname": "beds-rec",
        "tls": True,
        "tlsCAFile": "/etc/beds/ca.pem",
        "tlsCertificateKeyFile": "/etc/beds/node.pem",
    }
    system_cas = client_options(RecSettings(uri=REMOTE, database="d", tls=RecTlsSettings()))
    assert "tlsCAFile" not in system_cas
    assert system_cas["tls"] is True
    assert "tls" not in client_options(RecSettings(uri=REMOTE, database="d"))


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"tls": {}}, "stores.rec.tls", "the embedded server listens on 127.0.0.1 without TLS"),
        ({"uri": REMOTE + "?tls=true", "tls": {}}, "stores.rec.tls", "also set in stores.rec.uri"),
        ({"uri": REMOTE, "tls": "yes"}, "stores.rec.tls", "must be a table"),
        ({"uri": REMOTE, "tls": {"verify": False}}, "stores.rec.tls.verify", "not a known key"),
        ({"uri": REMOTE, "tls": {"ca_file": 1}}, "stores.rec.tls.ca_file", "must be a string"),
        (
            {"uri": REMOTE, "tls": {"ca_file": "/nonexistent/ca.pem"}},
            "stores.rec.tls.ca_file",
            "/nonexistent/ca.pem cannot be used: No such file or directory",
        ),
        ({"uri": REMOTE, "tls": {"ca_file": __file__}}, "stores.rec.tls.ca_file", "cannot be used"),
        (
            {"uri": REMOTE, "tls": {"cert_file": __file__}},
            "stores.rec.tls.cert_file",
            "not a PEM certificate",
        ),
        (
            {"uri": REMOTE, "tls": {"cert_file": "/x/client.crt", "key_file": "/x/client.key"}},
            "stores.rec.tls.key_file",
            "put both in stores.rec.tls.cert_file",
        ),
        ({"uri": REMOTE + "?tls=true&tlsInsecure=true"}, "stores.rec.uri", "(tlsInsecure)"),
        (
            {"uri": REMOTE + "?tls=true&tlsAllowInvalidHostnames=true"},
            "stores.rec.uri",
            "always verifies the server",
        ),
        (
            {"uri": REMOTE + "?tlsAllowInvalidCertificates=true"},
            "stores.rec.uri",
            "(tlsAllowInvalidCertificates)",
        ),
        (
            {"uri": REMOTE + "?tls=true&tlsCAFile=/nonexistent/ca.pem"},
            "stores.rec.uri",
            "option tlsCAFile: /nonexistent/ca.pem cannot be used: No such file",
        ),
        (
            {"uri": REMOTE + "?tls=true&tlsCertificateKeyFile=" + __file__},
            "stores.rec.uri",
            "option tlsCertificateKeyFile: ",
        ),
    ],
)
def test_tls_errors_name_the_key_and_file(options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", **options))
    assert caught.value.key == key
    assert caught.value.file == "beds.toml"
    assert str(caught.value).startswith(f"{key}: ")
    assert words in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None


TLS_SETTINGS = RecSettings(uri=REMOTE, database="d", tls=RecTlsSettings(ca_file="/x/ca.pem"))
PLAIN_SETTINGS = RecSettings(uri=REMOTE, database="d", server_selection_timeout=1.5)


@pytest.mark.parametrize(
    ("settings_", "error", "reason"),
    [
        (
            TLS_SETTINGS,
            "db.example:27017: SSL handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
            "verify failed: certificate has expired (_ssl.c:1006) (configured timeouts: "
            "socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms)",
            "the server's certificate was refused: certificate has expired (key stores.rec.tls)",
        ),
        (
            TLS_SETTINGS,
            "db.example:27017: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate "
            "required (_ssl.c:2580)",
            "the server requires a client certificate, and none was sent (key stores.rec.tls)",
        ),
        (
            TLS_SETTINGS,
            "db.example:27017: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)",
            "the server refused the client certificate: tlsv1 alert unknown ca "
            "(key stores.rec.tls)",
        ),
        (
            TLS_SETTINGS,
            "db.example:27017: SSL handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version "
            "number (_ssl.c:1006)",
            "the server does not speak TLS on this port (wrong version number) "
            "(key stores.rec.tls)",
        ),
        (
            TLS_SETTINGS,
            "db.example:27017: connection is already closed",
            "the server closed the connection after the TLS handshake; it may require a client "
            "certificate, and none was sent (key stores.rec.tls)",
        ),
        (
            PLAIN_SETTINGS,
            "db.example:27017: connection is already closed",
            "the server closed the connection; if the server accepts TLS only, turn TLS on with "
            "[stores.rec.tls] (key stores.rec.uri)",
        ),
        (
            PLAIN_SETTINGS,
            "db.example:27017: [Errno 111] Connection refused",
            "[Errno 111] Connection refused",
        ),
        (
            PLAIN_SETTINGS,
            None,
            "no answer within 1.5 s; if the server accepts TLS only, turn TLS on with "
            "[stores.rec.tls] (key stores.rec.uri)",
        ),
    ],
)
def test_a_failed_connection_is_put_in_words(
    settings_: RecSettings, error: str | None, reason: str
) -> None:
    """pymongo quotes the ssl error in its message, and keeps no cause: the words come from it."""
    assert _reason(None if error is None else AutoReconnect(error), settings_) == reason


def test_a_password_in_a_driver_message_is_masked() -> None:
    details = ["db.example:27017: user beds:s3cret%2Dpw and s3cret-pw"]
    uri = "mongodb://beds:s3cret%2Dpw@db.example/"
    assert _masked(details, uri) == ["db.example:27017: user beds:*** and ***"]


@given(
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
    password=st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=", min_size=1, max_size=30
    ),
)
def test_settings_repr_hides_the_uri_password(user: str, password: str) -> None:
    uri = f"mongodb://{user}:{password}@127.0.0.1:27017,127.0.0.1:27018/app?replicaSet=rs0"
    parsed = parse_settings(settings(uri=uri, database="app"))
    shown = repr(parsed)
    assert f"{user}:***@127.0.0.1:27017,127.0.0.1:27018/app" in shown
    assert f":{password}@" not in shown
