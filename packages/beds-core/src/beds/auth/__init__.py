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
- :mod:`~beds.auth.credential`: the header that carries a credential (light: clients import it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below, for type checkers and the layer test
    from beds.auth.authenticator import Authenticator
    from beds.auth.credential import CREDENTIAL_HEADER, bearer
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

_LAZY: dict[str, str] = {
    "CREDENTIAL_HEADER": "beds.auth.credential",
    "REVOKE_KIND": "beds.auth.revocation",
    "Authenticator": "beds.auth.authenticator",
    "OidcVerifier": "beds.auth.tokens",
    "Principal": "beds.auth.principal",
    "Revocations": "beds.auth.revocation",
    "SessionTokens": "beds.auth.tokens",
    "TokenKeys": "beds.auth.keys",
    "bearer": "beds.auth.credential",
}
"""Public name → its module, imported on first use (PEP 562): importing
:class:`~beds.auth.principal.Principal` must not import PyJWT and cryptography (about 100 ms)."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'beds.auth' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
