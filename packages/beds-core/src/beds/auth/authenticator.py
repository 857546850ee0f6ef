"""Credential → principal, before dispatch, with no database call per request.

The credential is the AMQP header ``authorization``, usually ``Bearer <token>``. Plugins that
implement ``beds_authenticate`` are asked first (API keys, another token format). A BEDS
session token (issuer ``auth.issuer``) is verified with the node's token keys and checked against
the revocations it learnt; any other issuer goes to the OIDC verifier when one is configured. A
verified token is remembered until it expires (a bounded cache), so a client sending the same
token again costs a dictionary look-up and the revocation check.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import jwt

from beds.auth.credential import MAX_CREDENTIAL_BYTES
from beds.auth.tokens import INVALID_CREDENTIAL, refuse
from beds.errors import Unauthenticated

if TYPE_CHECKING:
    from collections.abc import Callable

    from beds.auth.principal import Principal
    from beds.auth.revocation import Revocations
    from beds.auth.tokens import OidcVerifier, SessionTokens

__all__ = ("Authenticator",)

_CACHE_SIZE = 4096


class Authenticator:
    """Turns a request's credential into its principal.

    Args:
        sessions: BEDS session tokens.
        revocations: what is revoked now.
        oidc: an external identity provider's tokens, when configured.
    """

    def __init__(
        self,
        sessions: SessionTokens,
        revocations: Revocations,
        *,
        oidc: OidcVerifier | None = None,
        plugins: Callable[[str], Principal | None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.revocations = revocations
        self.oidc = oidc
        self.plugins = plugins
        """The plugins' ``beds_authenticate``, asked first (``None``: no plugin implements it)."""
        self._cache: OrderedDict[str, tuple[Principal, dict[str, Any]]] = OrderedDict()
        self.refused = 0
        """Credentials refused (a metric)."""

    def authenticate(self, credential: object, *, now: float | None = None) -> Principal | None:
        """Return the principal ``credential`` proves, or ``None`` when there is none.

        Raises:
            Unauthenticated: a credential is present and not valid (BEDS-401).
        """
        if credential is None:
            return None
        try:
            return self._authenticate(credential, time.time() if now is None else now)
        except Unauthenticated:
            self.refused += 1
            raise

    def _authenticate(self, credential: object, now: float) -> Principal:
        if isinstance(credential, bytes):
            credential = credential.decode("utf-8", "replace")
        if not isinstance(credential, str) or len(credential) > MAX_CREDENTIAL_BYTES:
            raise refuse("the authorization header is not a text of at most 8 KiB")
        if self.plugins is not None:
            proven = self.plugins(credential)
            if proven is not None:
                return proven
        scheme, _, token = credential.partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token.strip():
            raise refuse("the authorization header is not 'Bearer <token>'")
        token = token.strip()
        cached = self._cache.get(token)
        if cached is not None:
            principal, claims = cached
            if now >= claims["exp"] + self.sessions.leeway:
                del self._cache[token]
                raise refuse("the token expired")
        else:
            principal, claims = self._verify(token)
            self._cache[token] = (principal, claims)
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        if principal.issuer == self.sessions.issuer and self.revocations.is_revoked(
            claims, now=now
        ):
            raise refuse("the token's session or subject is revoked")
        return principal

    def _verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthenticated(INVALID_CREDENTIAL) from None
        if issuer == self.sessions.issuer or self.oidc is None:
            return self.sessions.verify(token)
        return self.oidc.verify(token)
