"""TLS client contexts for every connection a node makes: RabbitMQ, MariaDB and MongoDB.

One builder, :func:`client_context`, serves them all, so every connection checks the same
things the same way: the server's certificate is always verified, host name included
(``check_hostname``), against the CAs of ``ca_file`` or the system's. A file that cannot be
read, is not PEM, or holds a client certificate that has expired is a configuration error
naming its key (``amqp.tls.ca_file``, ``stores.rel.tls.cert_file``), found before any
connection is tried. A handshake that fails later is put in words by
:func:`handshake_problem`.
"""

from __future__ import annotations

import datetime as dt
import ssl
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from beds.errors import ConfigError

if TYPE_CHECKING:
    from beds.config.model import AmqpSettings

__all__ = (
    "TlsFiles",
    "amqp_context",
    "check_client_certificate",
    "client_context",
    "handshake_problem",
)


class TlsFiles(Protocol):
    """The three files of a TLS table (``[amqp.tls]``, ``[stores.rel.tls]``, …)."""

    @property
    def ca_file(self) -> str:
        """PEM file of the CAs that sign the server's certificate; empty: the system's."""

    @property
    def cert_file(self) -> str:
        """PEM file of the client certificate, when the server asks for one; may be empty."""

    @property
    def key_file(self) -> str:
        """PEM file of the client certificate's private key; empty: it is in ``cert_file``."""


def client_context(files: TlsFiles, *, key: str) -> ssl.SSLContext:
    """A client context that verifies the server against ``files.ca_file`` (or the system's CAs).

    Args:
        files: the table's ``ca_file``, ``cert_file`` (client certificate, optional) and
            ``key_file`` (its private key; empty when it is in ``cert_file``).
        key: the table's key path, such as ``stores.rel.tls``, for errors.

    Raises:
        ConfigError: a file that is not usable, naming ``{key}.{file}`` and the reason.
    """
    try:
        context = ssl.create_default_context(cafile=files.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(_unusable(files.ca_file, exc), key=f"{key}.ca_file") from None
    if files.cert_file:
        check_client_certificate(files.cert_file, key=f"{key}.cert_file")
        try:
            context.load_cert_chain(files.cert_file, files.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            name = "key_file" if files.key_file and "key" in str(exc).lower() else "cert_file"
            raise ConfigError(_unusable(files.cert_file, exc), key=f"{key}.{name}") from None
    elif files.key_file:
        raise ConfigError(f"is set without {key}.cert_file", key=f"{key}.key_file")
    return context


def check_client_certificate(path: str, *, key: str) -> None:
    """Refuse a client certificate file that does not hold a PEM certificate valid now.

    A server refuses an expired client certificate with a bare "certificate expired" alert (or
    just closes); saying so before connecting names the file and the date instead.

    Raises:
        ConfigError: unreadable, not PEM, expired or not yet valid; names ``key``.
    """
    from cryptography import x509

    try:
        with open(path, "rb") as file:
            certificate = x509.load_pem_x509_certificate(file.read())
    except OSError as exc:
        raise ConfigError(_unusable(path, exc), key=key) from None
    except ValueError:
        raise ConfigError(f"{path} cannot be used: not a PEM certificate", key=key) from None
    now = dt.datetime.now(dt.UTC)
    if certificate.not_valid_after_utc < now:
        raise ConfigError(
            f"{path} holds a certificate that expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            key=key,
        )
    if certificate.not_valid_before_utc > now:
        raise ConfigError(
            f"{path} holds a certificate not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            key=key,
        )


def amqp_context(settings: AmqpSettings) -> ssl.SSLContext | None:
    """The TLS context of ``settings`` (``None`` for a plaintext ``amqp://`` URL).

    Raises:
        ConfigError: a TLS file without an ``amqps://`` URL, or a file that is not usable.
    """
    tls = settings.tls
    if urlsplit(settings.url).scheme != "amqps":
        given = [name for name in ("ca_file", "cert_file", "key_file") if getattr(tls, name)]
        if given:
            raise ConfigError("is set, but amqp.url is not amqps://", key=f"amqp.tls.{given[0]}")
        return None
    return client_context(tls, key="amqp.tls")


def _unusable(path: str, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or "not a PEM certificate or key"
    return f"{path} cannot be used: {reason or type(exc).__name__}"


def handshake_problem(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, in words, if ``exc`` (or what caused it) is a TLS error."""
    seen: BaseException | None = exc
    visited: set[int] = set()  # a chain of causes can loop back on itself
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the server's certificate was refused: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return f"the TLS handshake failed: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    return None
