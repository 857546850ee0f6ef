"""Handlers of ``beds_user``: sign-up, reads, profile and password changes, deactivation."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from beds.envelopes import Operation
from beds.errors import Unauthenticated, Unauthorized, ValidationFailed
from beds.namaste import Query
from beds.templates.validate import validate_fetch, validate_write
from beds_identity import payloads

if TYPE_CHECKING:
    from beds.auth import Principal
    from beds.handlers import HandlerCall
    from beds_identity.passwords import Passwords

__all__ = ("Users",)

TEMPLATE = "beds_user"
_PROFILE = ("display_name", "email")


def is_admin(call: HandlerCall) -> bool:
    """Whether the caller has the template's admin role."""
    principal = call.principal
    return principal is not None and call.template.access.admin_role in principal.roles


def caller(call: HandlerCall) -> Principal:
    """The authenticated caller (access rules ensure one; this says so to the type checker)."""
    if call.principal is None:
        raise Unauthenticated(f"{call.request.operation.value} on {TEMPLATE} needs a login")
    return call.principal


async def credentials(call: HandlerCall, handle: str) -> dict[str, Any] | None:
    """The user's row with its hash (the internal query), or ``None``."""
    template, adapter = call.services.resolve(TEMPLATE)
    spec = template.queries["credentials"]
    rows = await adapter.fetch(
        template, Query(spec=spec, params={"handle": handle}, limit=1), call.ctx
    )
    return rows[0] if rows else None


class Users:
    """The ``beds_user`` handlers, sharing one password hasher."""

    def __init__(self, passwords: Passwords) -> None:
        self.passwords = passwords

    async def create(self, call: HandlerCall) -> Any:
        """Sign-up: hash the password, store the user with the ``member`` role."""
        payload = call.request.payload
        payloads.only(TEMPLATE, payload, ("handle", "password", *_PROFILE))
        secret = payloads.password(
            TEMPLATE, payload, "password", min_length=self.passwords.min_length
        )
        record = {name: payload[name] for name in ("handle", *_PROFILE) if name in payload}
        record["password_hash"] = "-"  # validated shape only; the real hash is made below
        validated = validate_write(call.template, Operation.CREATE, record)
        validated["password_hash"] = await self.passwords.hash(secret)
        return await call.adapter.create(call.template, validated, call.ctx)

    async def fetch(self, call: HandlerCall) -> Any:
        """Reads: ``by_handle`` and ``by_id`` for any principal, ``everyone`` for admins."""
        query = validate_fetch(call.template, call.request.payload)
        if query.spec.name == "everyone" and not is_admin(call):
            raise Unauthorized("only an admin may list every user")
        return await call.adapter.fetch(call.template, query, call.ctx)

    async def update(self, call: HandlerCall) -> Any:
        """Profile, password (with the old one) and, for admins, roles."""
        principal = caller(call)
        payload = call.request.payload
        payloads.only(TEMPLATE, payload, ("id", *_PROFILE, "password", "old_password", "roles"))
        record = {name: payload[name] for name in ("id", *_PROFILE, "roles") if name in payload}
        own = str(payload.get("id")) == principal.id
        if not own and not is_admin(call):
            raise Unauthorized("a user may change only their own account")
        if "roles" in record and not is_admin(call):
            raise Unauthorized("only an admin may change roles")
        if isinstance(record.get("roles"), str) and "member" not in record["roles"].split(","):
            raise ValidationFailed(
                f"invalid {TEMPLATE} payload", details=("$.payload.roles: must include member",)
            )
        secret = None
        if "password" in payload:
            secret = payloads.password(
                TEMPLATE, payload, "password", min_length=self.passwords.min_length
            )
            if own:  # an admin resetting another user's password needs no old one
                old = payloads.password(TEMPLATE, payload, "old_password", min_length=1)
                row = await credentials(call, principal.handle)
                if row is None or not await self.passwords.verify(row["password_hash"], old):
                    raise Unauthenticated("the old password is not right")
            record["password_hash"] = "-"
        validated = validate_write(call.template, Operation.UPDATE, record)
        if secret is not None:
            validated["password_hash"] = await self.passwords.hash(secret)
        result = await call.adapter.update(call.template, validated, call.ctx)
        if secret is not None or "roles" in record:
            # Tokens carry roles and prove the old password: every older one stops here.
            await revoke_user(call, str(validated["id"]))
        return result

    async def delete(self, call: HandlerCall) -> Any:
        """Deactivate a user (the user or an admin); every session of theirs is revoked."""
        principal = caller(call)
        key = validate_write(call.template, Operation.DELETE, call.request.payload)
        if str(key["id"]) != principal.id and not is_admin(call):
            raise Unauthorized("a user may deactivate only their own account")
        result = await call.adapter.delete(call.template, key, call.ctx)
        await revoke_user(call, str(key["id"]))
        return {"id": key["id"], **result}


async def revoke_user(call: HandlerCall, user_id: str) -> None:
    """Refuse, on every node, every token of the user issued before now."""
    now = time.time()
    until = now + call.services.auth.token_life
    await call.services.revoke({"sub": user_id, "before": now, "until": until})
