"""``/v1/auth/*``: sign-up, login, logout and "who am I", forwarded to beds-identity.

- ``signup`` is a ``beds_user`` create and ``login`` a ``beds_session`` create, both sent
  without a credential (they are open to anyone); ``logout`` is a ``beds_session`` delete with
  the caller's token, so every node refuses that token from then on.
- ``me`` and the live stream need the caller's principal. The edge never verifies a token: it
  sends a ``ping`` with the token, which the node answers only when the token is valid (a
  forged, expired or revoked one gets ``BEDS-401``), and then reads the token's claims (handle,
  roles), which the node has just vouched for.

Passwords travel only in the request payload; neither they nor tokens are logged.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
from starlette.responses import Response as HttpResponse

from beds.config.model import AuthSettings
from beds.envelopes import Operation
from beds.routing import PING_TEMPLATE
from beds_http.forward import Forwarder, bearer_token, json_response
from beds_http.limits import read_object
from beds_http.problems import EdgeRefusal

if TYPE_CHECKING:
    from starlette.requests import Request


__all__ = ("AuthRoutes", "Caller", "claims_of")

USER_TEMPLATE: Final = "beds_user"
SESSION_TEMPLATE: Final = "beds_session"
_SIGNUP_FIELDS: Final = ("handle", "password", "display_name", "email")


@attrs.frozen
class Caller:
    """Who a verified token names."""

    id: str
    handle: str
    roles: frozenset[str]


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without checking it: only after a node accepted the token."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _roles(value: object) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(r for r in value.replace(",", " ").split() if r)
    if isinstance(value, list):
        return frozenset(r for r in value if isinstance(r, str))
    return frozenset()


@attrs.define
class AuthRoutes:
    """The endpoints of ``/v1/auth`` and the principal lookup of the live stream."""

    forward: Forwarder
    auth: AuthSettings

    def caller_of(self, claims: dict[str, Any]) -> Caller:
        """The principal of a token's claims.

        An identity provider's claim names (``[auth.oidc]``) for its issuer's tokens, BEDS
        session tokens' otherwise.
        """
        oidc = self.auth.oidc
        if oidc.issuer and claims.get("iss") == oidc.issuer:
            handle = claims.get(oidc.handle_claim) or claims.get("sub")
            roles = _roles(claims.get(oidc.roles_claim))
        else:
            handle, roles = claims.get("handle") or claims.get("sub"), _roles(claims.get("roles"))
        return Caller(id=str(claims.get("sub", handle)), handle=str(handle or ""), roles=roles)

    async def verified(self, request: Request) -> tuple[str | None, Caller | None]:
        """The request's token and its principal, after a node accepted it (``None``: none).

        Raises:
            EdgeRefusal: a header that cannot hold a token (``BEDS-401``).
            NodeError: the node refused the token (``BEDS-401``).
        """
        token = bearer_token(request)
        if token is None:
            return None, None
        await self.forward.call(request, PING_TEMPLATE, Operation.PING, {}, token=token)
        return token, self.caller_of(claims_of(token))

    async def signup(self, request: Request) -> HttpResponse:
        """``POST /v1/auth/signup``: create a user (``beds_user``)."""
        request.scope["beds_route"] = "/v1/auth/signup"
        body = await read_object(request, self.forward.settings)
        unknown = sorted(set(body) - set(_SIGNUP_FIELDS))
        if unknown:
            raise EdgeRefusal(
                "BEDS-422",
                "the sign-up body has unknown fields",
                reason="body",
                details=[f"$.{name}: unknown field" for name in unknown],
            )
        response = await self.forward.call(
            request, USER_TEMPLATE, Operation.CREATE, body, token=None
        )
        return json_response({"data": response.data}, 201)

    async def login(self, request: Request) -> HttpResponse:
        """``POST /v1/auth/login``: trade a handle and password for a session token."""
        request.scope["beds_route"] = "/v1/auth/login"
        body = await read_object(request, self.forward.settings)
        if set(body) != {"handle", "password"}:
            raise EdgeRefusal(
                "BEDS-422",
                'the login body must be {"handle", "password"}',
                reason="body",
            )
        response = await self.forward.call(
            request, SESSION_TEMPLATE, Operation.CREATE, body, token=None
        )
        data = response.data if isinstance(response.data, dict) else {}
        token = str(data.get("token", ""))
        caller = self.caller_of(claims_of(token))
        return json_response(
            {
                "data": {
                    "token": token,
                    "expires_at": data.get("expires_at"),
                    "handle": caller.handle or body["handle"],
                    "roles": sorted(caller.roles),
                }
            }
        )

    async def logout(self, request: Request) -> HttpResponse:
        """``POST /v1/auth/logout``: end the session of the Bearer token."""
        request.scope["beds_route"] = "/v1/auth/logout"
        token = self._required(request)
        await self.forward.call(request, SESSION_TEMPLATE, Operation.DELETE, {}, token=token)
        return HttpResponse(status_code=204)

    async def me(self, request: Request) -> HttpResponse:
        """``GET /v1/auth/me``: the principal of the Bearer token, once a node accepted it."""
        request.scope["beds_route"] = "/v1/auth/me"
        self._required(request)
        _, caller = await self.verified(request)
        assert caller is not None  # _required refused a request without a token
        return json_response(
            {"data": {"id": caller.id, "handle": caller.handle, "roles": sorted(caller.roles)}}
        )

    def _required(self, request: Request) -> str:
        token = bearer_token(request)
        if token is None:
            raise EdgeRefusal(
                "BEDS-401",
                "this route needs an Authorization: Bearer <token> header",
                reason="token",
                headers={"WWW-Authenticate": 'Bearer realm="beds"'},
            )
        return token
