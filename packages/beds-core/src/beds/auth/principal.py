"""The authenticated principal of a request."""

from __future__ import annotations

import attrs

__all__ = ("Principal",)


@attrs.frozen(kw_only=True)
class Principal:
    """Who sent a request, as its credential proves.

    ``id`` is stable for the life of the account (a user id, or an OIDC ``sub``); ``handle`` is
    the name people see. Access rules name ``roles``; ownership compares ``id``.
    """

    id: str
    handle: str
    roles: frozenset[str] = frozenset()
    issuer: str = "beds"
    """``beds`` for BEDS session tokens, else the identity provider's ``iss``."""
    session: str = ""
    """The session a BEDS token belongs to (its ``sid``); empty for OIDC tokens."""
