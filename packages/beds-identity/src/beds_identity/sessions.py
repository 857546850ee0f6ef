"""Handlers of ``beds_session``: log in, refresh, log out, list one's sessions."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import TYPE_CHECKING, Any

from beds.auth import Principal
from beds.envelopes import Operation
from beds.errors import InternalError, NotFound, Unauthenticated, ValidationFailed
from beds.namaste import Query
from beds.templates.validate import validate_write
from beds_identity import payloads
from beds_identity.users import TEMPLATE as USER_TEMPLATE
from beds_identity.users import caller, credentials

if TYPE_CHECKING:
    from beds.auth import SessionTokens
    from beds.handlers import HandlerCall
    from beds_identity.passwords import Passwords
    from beds_identity.throttle import Throttle

__all__ = ("Sessions",)

TEMPLATE = "beds_session"
WRONG = "the handle or the password is not right"
"""One answer for an unknown handle, a deactivated user and a wrong password."""


def _tokens(call: HandlerCall) -> SessionTokens:
    tokens = call.services.tokens
    if tokens is None or not tokens.can_issue:
        raise InternalError(
            "this node cannot issue session tokens: it has no signing key (auth.keys_dir)"
        )
    return tokens


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


def _roles(text: object) -> frozenset[str]:
    return frozenset(role for role in str(text or "").split(",") if role)


class Sessions:
    """The ``beds_session`` handlers, sharing the hasher and the failed-login counts."""

    def __init__(self, passwords: Passwords, throttle: Throttle) -> None:
        self.passwords = passwords
        self.throttle = throttle

    async def create(self, call: HandlerCall) -> Any:
        """Log in: ``{"handle", "password"}`` → a session token.

        Throttled per handle and per origin before any hash is computed; an unknown handle
        costs the same hash verification as a wrong password.
        """
        payload = call.request.payload
        payloads.only(TEMPLATE, payload, ("handle", "password"))
        handle = payload.get("handle")
        if not isinstance(handle, str) or not 1 <= len(handle) <= 64:
            raise ValidationFailed(
                f"invalid {TEMPLATE} payload",
                details=("$.payload.handle: must be a string of 1 to 64 characters",),
            )
        secret = payloads.password(TEMPLATE, payload, "password", min_length=1)
        keys = (f"handle:{handle}", f"origin:{call.request.meta.origin}")
        tokens = _tokens(call)
        self.throttle.attempt(*keys)  # counted as failed until the password proves right
        row = await credentials(call, handle)
        usable = row is not None and bool(row.get("active"))
        hashed = str(row["password_hash"]) if row is not None and usable else None
        if not await self.passwords.verify(hashed, secret) or row is None:
            raise Unauthenticated(WRONG)
        self.throttle.succeeded(*keys)
        if self.passwords.needs_rehash(str(row["password_hash"])):
            await self._rehash(call, row["id"], secret)
        settings = call.services.auth
        session = uuid.uuid4().hex
        ends = time.time() + settings.session_ttl
        record = {"session": session, "user_id": row["id"], "expires_at": _iso(ends)}
        await call.adapter.create(
            call.template, validate_write(call.template, Operation.CREATE, record), call.ctx
        )
        principal = Principal(id=str(row["id"]), handle=handle, roles=_roles(row.get("roles")))
        token, expires = tokens.issue(principal, session=session)
        return {"token": token, "expires_at": _iso(expires), "session": session}

    async def update(self, call: HandlerCall) -> Any:
        """Refresh: a new token for the caller's session while it lasts, with today's roles."""
        principal = caller(call)
        payloads.only(TEMPLATE, call.request.payload, ())
        if not principal.session:
            raise Unauthenticated("only a BEDS session token can be refreshed")
        tokens = _tokens(call)
        try:
            # ses_touch answers the session's row only while it lasts (no field changes).
            await call.adapter.update(call.template, {"session": principal.session}, call.ctx)
        except NotFound:
            raise Unauthenticated("the session ended; log in again") from None
        row = await credentials(call, principal.handle)
        if row is None or not row.get("active"):
            raise Unauthenticated("the session ended; log in again")
        renewed = Principal(
            id=principal.id, handle=principal.handle, roles=_roles(row.get("roles"))
        )
        token, expires = tokens.issue(renewed, session=principal.session)
        return {"token": token, "expires_at": _iso(expires), "session": principal.session}

    async def delete(self, call: HandlerCall) -> Any:
        """Log out: end the caller's session (or another of their sessions) on every node."""
        principal = caller(call)
        payload = call.request.payload
        payloads.only(TEMPLATE, payload, ("session",))
        session = payload.get("session", principal.session)
        if not isinstance(session, str) or not session:
            raise ValidationFailed(
                f"invalid {TEMPLATE} payload", details=("$.payload.session: is required",)
            )
        spec = call.template.queries["by_session"]
        rows = await call.adapter.fetch(
            call.template, Query(spec=spec, params={"session": session}, limit=1), call.ctx
        )
        if not rows or str(rows[0].get("user_id")) != principal.id:
            raise NotFound(f"no {TEMPLATE} record of yours has that key")
        if rows[0].get("revoked_at") is None:
            await call.adapter.delete(call.template, {"session": session}, call.ctx)
        until = time.time() + call.services.auth.token_life
        await call.services.revoke({"sid": session, "until": until})
        return {"session": session}

    async def fetch(self, call: HandlerCall) -> Any:
        """The caller's open sessions (query ``mine``; ``limit`` optional)."""
        principal = caller(call)
        payload = call.request.payload
        payloads.only(TEMPLATE, payload, ("query", "limit"))
        spec = call.template.queries["mine"]
        if payload.get("query", "mine") != "mine":
            raise ValidationFailed(
                f"invalid {TEMPLATE} payload", details=("$.payload.query: must be mine",)
            )
        limit = payload.get("limit", spec.max_limit)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= spec.max_limit
        ):
            raise ValidationFailed(
                f"invalid {TEMPLATE} payload",
                details=(f"$.payload.limit: must be an integer from 1 to {spec.max_limit}",),
            )
        if not principal.id.isdigit():
            return []  # an identity provider's principal has no BEDS sessions
        query = Query(spec=spec, params={"user_id": int(principal.id)}, limit=limit)
        return await call.adapter.fetch(call.template, query, call.ctx)

    async def _rehash(self, call: HandlerCall, user_id: object, secret: str) -> None:
        template, adapter = call.services.resolve(USER_TEMPLATE)
        record = {"id": user_id, "password_hash": await self.passwords.hash(secret)}
        await adapter.update(template, record, call.ctx)
