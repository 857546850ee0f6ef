"""TLS for the RabbitMQ connection: the client context built from ``[amqp.tls]``.

The server's certificate is always verified, host name included (``check_hostname``): against
the CAs of ``amqp.tls.ca_file``, or the system's. A file that cannot be read or is not PEM is a
configuration error naming its key, found before any connection is tried.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from beds.errors import ConfigError

if TYPE_CHECKING:
    from beds.config.model import AmqpSettings

__all__ = ("amqp_context", "handshake_problem")


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
    try:
        context = ssl.create_default_context(cafile=tls.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(_unusable(tls.ca_file, exc), key="amqp.tls.ca_file") from None
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            key = (
                "amqp.tls.key_file"
                if tls.key_file and "key" in str(exc).lower()
                else "amqp.tls.cert_file"
            )
            raise ConfigError(_unusable(tls.cert_file, exc), key=key) from None
    elif tls.key_file:
        raise ConfigError("is set without amqp.tls.cert_file", key="amqp.tls.key_file")
    return context


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
