"""Connecting to MongoDB: the client's options, and a failed connection put in words.

pymongo reports servers it could not use as ``ServerSelectionTimeoutError``, whose text is a
dump of its topology. A failed TLS handshake is in there as text only: the ``ssl`` exception is
not kept as a cause. :func:`unreachable` reads each server's last error from the client's
topology description instead and says why in words, naming the key to look at:
``stores.rec.tls``, or ``stores.rec.uri`` when the URI turns TLS on or the connection is
plaintext. Of the URI only host and port are repeated, and its password is masked even if a
driver message should ever hold it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pymongo.errors import ConnectionFailure, OperationFailure

from beds.errors import StoreUnavailable
from beds.transport.tls import handshake_problem

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

    from beds_rec.settings import RecSettings

__all__ = ("client_options", "unreachable")

_SSL = re.compile(r"\[SSL: (?P<code>[A-Z0-9_]+)\] (?P<text>.*?)\s*\(_ssl\.c:\d+\)")
"""How pymongo's message quotes an ``ssl.SSLError``: ``[SSL: CODE] text (_ssl.c:1006)``."""
_TIMEOUTS = re.compile(r"\s*\(configured timeouts: [^)]*\)")
_CLOSED = re.compile(r"closed|reset by peer|EOF", re.IGNORECASE)
_VERIFY_FAILED = "certificate verify failed: "
_CERTIFICATE_REQUIRED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED"}
"""The server asked for a client certificate and got none (TLS 1.3; TLS 1.2 servers only say
``handshake failure``, which has other causes too)."""
_TURN_TLS_ON = "if the server accepts TLS only, turn TLS on with [stores.rec.tls]"
"""What a plaintext client should try when the server closes or never answers."""
_NOT_TLS = {"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}
"""What a TLS client reads when the server answers in plaintext."""


def client_options(settings: RecSettings) -> dict[str, Any]:
    """The keyword arguments of ``AsyncMongoClient`` for ``settings`` (TLS from the table)."""
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": round(settings.server_selection_timeout * 1000),
        "appname": "beds-rec",
    }
    tls = settings.tls
    if tls is not None:
        options["tls"] = True
        if tls.ca_file:
            options["tlsCAFile"] = tls.ca_file
        if tls.cert_file:  # holds the key too (beds_rec.settings)
            options["tlsCertificateKeyFile"] = tls.cert_file
    return options


def unreachable(client: AsyncMongoClient[Any], settings: RecSettings) -> StoreUnavailable:
    """Why no server could be used: one detail per server the client knows, in words.

    Call it when the client's server selection timed out; it reads the client's topology.
    """
    servers = client.topology_description.server_descriptions()
    details = [
        f"{host}:{port}: {_reason(servers[(host, port)].error, settings)}"
        for host, port in sorted(servers, key=str)
    ]
    over = " over TLS" if settings.tls_key else ""
    return StoreUnavailable(
        f"the MongoDB server cannot be reached{over}",
        details=_masked(details, settings.uri) or ["no server is known"],
    )


def _reason(error: Exception | None, settings: RecSettings) -> str:
    """One server's last error in words, with the key to look at."""
    key = settings.tls_key or "stores.rec.uri"
    if error is None:
        waited = f"no answer within {settings.server_selection_timeout:g} s"
        if settings.tls_key is None:
            # A TLS-only server waits for a ClientHello that a plaintext client never sends.
            return f"{waited}; {_TURN_TLS_ON} (key {key})"
        # A plaintext server reads the ClientHello as the start of a (huge) message, and waits.
        return f"{waited}; a server that does not speak TLS may not answer a handshake (key {key})"
    text = _TIMEOUTS.sub("", str(error)).split(": ", 1)[-1]  # after pymongo's "host:port: "
    found = _SSL.search(text)
    problem = handshake_problem(error) or (
        _ssl_words(found["code"], found["text"]) if found else None
    )
    if problem is not None:
        return f"{problem} (key {key})"
    if isinstance(error, OperationFailure):  # the server's text holds values: its code only
        return f"the server refused: {(error.details or {}).get('codeName') or 'UnknownError'}"
    if not isinstance(error, ConnectionFailure):
        return type(error).__name__
    if not _CLOSED.search(text):
        return text
    if settings.tls_key is None:
        return f"the server closed the connection; {_TURN_TLS_ON} (key {key})"
    # A TLS 1.3 server checks the client's certificate after the client has finished its
    # handshake: its refusal may come as an alert, or as a closed connection only.
    if _sends_certificate(settings):
        return (
            "the server closed the connection after the TLS handshake; it may have refused "
            f"the client certificate (key {key})"
        )
    return (
        "the server closed the connection after the TLS handshake; it may require a client "
        f"certificate, and none was sent (key {key})"
    )


def _sends_certificate(settings: RecSettings) -> bool:
    if settings.tls is not None:
        return bool(settings.tls.cert_file)
    return "tlscertificatekeyfile=" in (settings.uri or "").lower()


def _ssl_words(code: str, text: str) -> str:
    """A TLS failure quoted by pymongo (``[SSL: CODE] text``), in words."""
    if text.startswith(_VERIFY_FAILED):  # the words of beds.transport.tls.handshake_problem
        return f"the server's certificate was refused: {text.removeprefix(_VERIFY_FAILED)}"
    if code in _CERTIFICATE_REQUIRED:
        return "the server requires a client certificate, and none was sent"
    if ("ALERT" in code and "CERTIFICATE" in code) or code.endswith("UNKNOWN_CA"):
        return f"the server refused the client certificate: {text}"
    if code in _NOT_TLS:
        return f"the server does not speak TLS on this port ({text})"
    if code == "UNEXPECTED_EOF_WHILE_READING":
        return "the server closed the connection during the TLS handshake; it may not speak TLS"
    return f"the TLS handshake failed: {text}"


def _masked(details: list[str], uri: str | None) -> list[str]:
    """``details`` with the URI's password, as written or decoded, replaced by ``***``."""
    try:
        password = urlsplit(uri).password if uri else None
    except ValueError:
        password = None
    if not password:
        return details
    for secret in {password, unquote(password)}:
        details = [detail.replace(secret, "***") for detail in details]
    return details
