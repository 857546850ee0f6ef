"""[stores.rel.tls]: the context built at parse time, and connection failures put in words.

No server here: the handshakes themselves are in tests/integration/tls/test_mariadb_tls.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from asyncmy import errors as my

from beds.errors import ConfigError, StoreUnavailable
from beds.namaste import StoreSettings
from beds_rel.errors import connect_problem, connecting, translate
from beds_rel.settings import RelSettings, parse_settings

URL = "mysql://app:s3cret@db.example:3307/spew"


def parse(**options: Any) -> RelSettings:
    return parse_settings(StoreSettings(store="rel", options=options, file="beds.toml"))


def test_no_tls_table_is_plaintext() -> None:
    settings = parse(url=URL)
    assert settings.tls is None
    assert "ssl" not in settings.connect_kwargs()


def test_an_empty_tls_table_verifies_against_the_system_cas() -> None:
    settings = parse(url=URL, tls={}, secondaries=["mysql://r:pw@replica/spew"])
    context = settings.tls
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert settings.connect_kwargs()["ssl"] is context
    assert settings.connect_kwargs(with_database=False)["ssl"] is context  # schema apply
    # Every secondary is reached over TLS too, with the same context.
    assert settings.secondaries[0].connect_kwargs()["ssl"] is context


def test_verify_identity_false_keeps_the_chain_check() -> None:
    context = parse(url=URL, tls={"verify_identity": False}).tls
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


@pytest.mark.parametrize(
    ("tls", "key", "words"),
    [
        ({"cafile": "/x"}, "cafile", "is not a known key"),
        ({"ca_file": 3}, "ca_file", "must be a string"),
        ({"verify_identity": "no"}, "verify_identity", "must be true or false"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "/nonexistent/ca.pem cannot be used"),
        ({"ca_file": __file__}, "ca_file", "cannot be used"),
        ({"cert_file": "/nonexistent/c.pem"}, "cert_file", "No such file or directory"),
        ({"cert_file": __file__}, "cert_file", "not a PEM certificate"),
        ({"key_file": "/nonexistent/k.pem"}, "key_file", "is set without"),
    ],
)
def test_tls_errors_name_the_file_and_the_key(tls: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(url=URL, tls=tls)
    error = refused.value
    assert (error.key, error.file) == (f"stores.rel.tls.{key}", "beds.toml")
    assert str(error).startswith(f"stores.rel.tls.{key}: ")
    assert str(error).endswith(f"(file beds.toml, key stores.rel.tls.{key})")
    assert words in str(error)
    assert "s3cret" not in str(error)
    assert error.__cause__ is None


def test_the_documented_keys_include_the_sub_table() -> None:
    from beds_rel.settings import _KEYS

    assert {"tls", "tls.ca_file", "tls.cert_file", "tls.key_file", "tls.verify_identity"} <= set(
        _KEYS
    )


def _refused(verify_message: str) -> my.OperationalError:
    """What asyncmy raises when the server's certificate is refused during the upgrade."""
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] verify failed")
    cause.verify_message = verify_message
    error = my.OperationalError(2003, "Can't connect to MySQL server on 'db' (verify failed)")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("verify_message", "hint"),
    [
        ("certificate has expired", "the server needs a valid certificate"),
        ("Hostname mismatch, certificate is not valid for 'db'.", "verify_identity = false"),
        ("IP address mismatch, certificate is not valid for '10.0.0.1'.", "verify_identity"),
        ("self-signed certificate in certificate chain", "stores.rel.tls.ca_file must hold"),
    ],
)
def test_a_refused_certificate_says_why_and_which_key(verify_message: str, hint: str) -> None:
    problem = connect_problem(_refused(verify_message), tls=True)
    assert isinstance(problem, StoreUnavailable)
    assert problem.message.startswith(
        "cannot connect to the MariaDB server of stores.rel.url over TLS ([stores.rel.tls]): "
        f"the server's certificate was refused: {verify_message.rstrip('.')}; "
    )
    assert hint in problem.message
    assert problem.details == ("MariaDB error 2003",)


def test_a_handshake_with_a_server_without_tls_asks_about_the_server() -> None:
    error = my.OperationalError(2003, "Can't connect")
    cause = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    cause.reason = "WRONG_VERSION_NUMBER"  # the ssl module sets it on the errors it raises
    error.__cause__ = cause
    problem = connect_problem(error, tls=True, url_key="stores.rel.secondaries[1]")
    assert problem is not None
    assert "server of stores.rel.secondaries[1] over TLS" in problem.message
    assert problem.message.endswith("does the server have TLS on (have_ssl)?")


def test_a_server_that_requires_tls() -> None:
    # MySQL's answer to a plaintext login under require_secure_transport.
    error = my.OperationalError(3159, "Connections using insecure transport are prohibited")
    problem = connect_problem(error, tls=False)
    assert problem is not None
    assert problem.message == "the server of stores.rel.url requires TLS: add [stores.rel.tls]"
    mapped = translate(error)
    assert isinstance(mapped, StoreUnavailable)
    assert "add [stores.rel.tls]" in mapped.message


def test_access_denied_over_plaintext_mentions_tls_but_not_over_tls() -> None:
    # MariaDB answers a plaintext login under require_secure_transport like a wrong password.
    denied = my.OperationalError(1045, "Access denied for user 'app'@'10.0.0.2'")
    plaintext = connect_problem(denied, tls=False)
    assert plaintext is not None
    assert "add [stores.rel.tls]" in plaintext.message
    assert "stores.rel.url" in plaintext.message
    assert connect_problem(denied, tls=True) is None  # the plain translation says it
    assert connect_problem(my.OperationalError(2003, "refused"), tls=False) is None
    assert connect_problem(None, tls=False) is None


@pytest.mark.parametrize("tls", [None, {}])
def test_connecting_rewords_only_what_the_configuration_can_fix(tls: dict[str, Any] | None) -> None:
    settings = parse(url=URL) if tls is None else parse(url=URL, tls=tls)
    with pytest.raises(StoreUnavailable) as refused, connecting(settings):
        raise _refused("certificate has expired")
    assert "over TLS ([stores.rel.tls])" in refused.value.message
    assert isinstance(refused.value.__cause__, my.OperationalError)
    with pytest.raises(StoreUnavailable) as refused, connecting(settings):
        raise my.OperationalError(2003, "Can't connect to MySQL server on 'db.example'")
    assert refused.value.message == "cannot connect to MariaDB"
    with pytest.raises(StoreUnavailable) as refused, connecting(settings):
        raise my.OperationalError(1045, "Access denied")
    assert ("add [stores.rel.tls]" in refused.value.message) is (tls is None)


def test_a_file_is_checked_before_anything_connects(tmp_path: Path) -> None:
    """A port nothing listens on: parsing alone refuses the file, without trying it."""
    with pytest.raises(ConfigError):
        parse(url="mysql://app:pw@127.0.0.1:1/spew", tls={"ca_file": str(tmp_path / "none")})
