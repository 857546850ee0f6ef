"""Authenticated principals in tests: a key pair in memory, and credentials for any handle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from beds.auth.authenticator import Authenticator
from beds.auth.credential import bearer
from beds.auth.keys import TokenKeys
from beds.auth.principal import Principal
from beds.auth.revocation import Revocations
from beds.auth.tokens import SessionTokens
from beds.config.model import AuthSettings

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ("TestIdentity",)


class TestIdentity:
    """Issues BEDS session tokens with a fresh key, and verifies them.

    ``TestIdentity(env="test").credential("alice")`` is the ``authorization`` header value of a
    member named alice (principal id ``alice``); give ``authenticator`` to a
    :class:`~beds.dispatch.Dispatcher` to accept it.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        env: str = "test",
        ttl: float = 900.0,
        kid: str = "test",
        keys: TokenKeys | None = None,
    ) -> None:
        if keys is None:
            key = Ed25519PrivateKey.generate()
            keys = TokenKeys(verify={kid: key.public_key()}, signing_kid=kid, signing=key)
        self.env = env
        """The environment whose nodes accept these tokens (their audience)."""
        self.tokens = SessionTokens(keys, issuer="beds", audience=env, ttl=ttl, leeway=0.0)
        self.revocations = Revocations()
        self.authenticator = Authenticator(self.tokens, self.revocations)

    @classmethod
    def development(cls, env: str = "dev") -> TestIdentity:
        """Tokens that development nodes of ``env`` accept (they share the user's dev keys)."""
        return cls(env=env, keys=TokenKeys.load(AuthSettings(), production=False))

    def token(
        self,
        handle: str,
        roles: Iterable[str] = ("member",),
        *,
        session: str = "",
        now: float | None = None,
    ) -> str:
        """A signed session token of ``handle`` (its id is the handle too)."""
        principal = Principal(id=handle, handle=handle, roles=frozenset(roles))
        token, _ = self.tokens.issue(principal, session=session, now=now)
        return token

    def credential(
        self,
        handle: str,
        roles: Iterable[str] = ("member",),
        *,
        session: str = "",
        now: float | None = None,
    ) -> str:
        """The ``authorization`` header value of a token of ``handle``."""
        return bearer(self.token(handle, roles, session=session, now=now))
