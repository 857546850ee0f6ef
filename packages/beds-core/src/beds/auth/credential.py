"""Where a request's credential travels: the AMQP header, and the value that carries a token.

Kept apart from the verifiers so that a client, which only sends credentials, never imports
the JWT and cryptography libraries.
"""

from __future__ import annotations

__all__ = ("CREDENTIAL_HEADER", "MAX_CREDENTIAL_BYTES", "bearer")

CREDENTIAL_HEADER = "authorization"
"""The AMQP header that carries a request's credential."""
MAX_CREDENTIAL_BYTES = 8192
"""Longest credential header value accepted (a token with many roles stays far below)."""


def bearer(token: str) -> str:
    """The header value that carries ``token``."""
    return f"Bearer {token}"
