"""Authenticated principals: who sent a request, as a credential proves it, never as it claims.

A request's credential travels in the AMQP header ``authorization`` (``Bearer <token>``), never in
the body, so it is not part of what is validated, fingerprinted or logged. Before dispatch the
node's :class:`Authenticator` turns it into a :class:`Principal` (or ``None``: anonymous); the
template's access rules then decide (:mod:`beds.dispatch.access`). ``meta.principal`` as sent is
ignored: the dispatcher overwrites it with the authenticated principal's id.

- :mod:`~beds.auth.keys`: the Ed25519 keys that sign and verify BEDS session tokens, by ``kid``.
- :mod:`~beds.auth.tokens`: issuing and verifying session tokens (JWT, EdDSA), and verifying an
  external identity provider's access tokens (OIDC, keys from a JWKS file).
- :mod:`~beds.auth.revocation`: revoked sessions and subjects, learnt from control events.
- :mod:`~beds.auth.authenticator`: credential → principal, with no database call per request.
"""

from beds.auth.authenticator import CREDENTIAL_HEADER, Authenticator, bearer
from beds.auth.keys import TokenKeys
from beds.auth.principal import Principal
from beds.auth.revocation import REVOKE_KIND, Revocations
from beds.auth.tokens import OidcVerifier, SessionTokens

__all__ = (
    "CREDENTIAL_HEADER",
    "REVOKE_KIND",
    "Authenticator",
    "OidcVerifier",
    "Principal",
    "Revocations",
    "SessionTokens",
    "TokenKeys",
    "bearer",
)
