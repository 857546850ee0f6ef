"""Access: who sent a request, and whether they may do what it asks, decided before it runs.

In order: :func:`authenticate` (the credential proves a principal; the dispatcher has the codec
put its id in ``meta.principal``, whatever the sender wrote there, and the AMQP user RabbitMQ
vouched for in ``meta.origin``), then :func:`admit`: :func:`authorize` (the template's origins,
then its access rules by role), :func:`bind_owner` (create) and
:func:`bind_principal` (params declared as the principal's); and for a template with an
``owner`` field, :func:`check_owner` (update, delete: only the owner, or an admin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from beds.envelopes import Operation, Request
from beds.errors import Unauthenticated, Unauthorized, UntrustedOrigin
from beds.namaste import Query

if TYPE_CHECKING:
    from beds.auth.authenticator import Authenticator
    from beds.auth.principal import Principal
    from beds.namaste import CallContext, NamasteCore
    from beds.templates.model import Template

__all__ = (
    "admit",
    "authenticate",
    "authorize",
    "bind_owner",
    "bind_param",
    "bind_principal",
    "check_owner",
    "own_record",
)

_NO_AUTHENTICATOR = "this node accepts no credentials (no [auth] keys are configured)"


def authenticate(credential: object, authenticator: Authenticator | None) -> Principal | None:
    """The principal ``credential`` proves (``None``: no credential, an anonymous request).

    Raises:
        Unauthenticated: a credential is present and not valid, or this node accepts none
            (BEDS-401).
    """
    if credential is None:
        return None
    if authenticator is None:
        raise Unauthenticated(_NO_AUTHENTICATOR)
    return authenticator.authenticate(credential)


def authorize(
    request: Request,
    template: Template,
    principal: Principal | None,
    operation: Operation | None = None,
) -> None:
    """Refuse a request its origin or principal may not make (the template's access rules).

    ``operation`` is the operation whose rule applies (a batch's single operation: a
    ``create_many`` is allowed where a ``create`` is); by default the request's.

    Raises:
        UntrustedOrigin: the template names origins and the request's is not one (BEDS-403O).
        Unauthenticated: the operation needs a principal and the request has none (BEDS-401).
        Unauthorized: the principal's roles do not allow the operation (BEDS-403).
    """
    origins = template.access.origins
    if origins and request.meta.origin not in origins:
        raise UntrustedOrigin(
            f"{template.name} serves requests from named AMQP users only",
            details=(f"origin: {request.meta.origin or '(not vouched for)'}",),
        )
    if template.access.allows(operation or request.operation, principal):
        return
    if principal is None:
        raise Unauthenticated(
            f"{request.operation.value} on {template.name} needs an authenticated principal"
        )
    raise Unauthorized(
        f"principal may not {request.operation.value} {template.name}",
        details=(f"principal: {principal.handle}",),
    )


def admit(request: Request, template: Template, principal: Principal | None) -> Request:
    """The access rules, then the principal bound where the template says: the request to run.

    Raises:
        Unauthenticated: the operation needs a principal and the request has none.
        Unauthorized: the principal may not, or the payload names someone else.
    """
    authorize(request, template, principal)
    return bind_principal(bind_owner(request, template, principal), template, principal)


def bind_owner(request: Request, template: Template, principal: Principal | None) -> Request:
    """On create, set the template's owner field to the principal's handle.

    An admin (``admin_role``) may name another owner in the payload.

    Raises:
        Unauthenticated: the template has owners and the request no principal.
        Unauthorized: the payload names another owner.
    """
    owner = template.access.owner
    if owner is None or request.operation is not Operation.CREATE:
        return request
    if principal is None:
        raise Unauthenticated(f"records of {template.name} have owners: log in to create one")
    payload = own_record(template, owner, request.payload, principal, "$.payload")
    return request if payload is request.payload else attrs.evolve(request, payload=payload)


def own_record(
    template: Template, owner: str, payload: dict[str, Any], principal: Principal, path: str
) -> dict[str, Any]:
    """A create's record with its owner field bound to ``principal`` (one record of a batch too).

    An admin may name another owner. ``path`` prefixes the detail (``$.records[3]``).

    Raises:
        Unauthorized: the record names another owner.
    """
    if owner in payload and template.access.admin_role in principal.roles:
        return payload  # an admin may create a record for another owner (imports, support)
    if payload.get(owner, principal.handle) != principal.handle:
        raise Unauthorized(
            f"{owner} must be the authenticated principal's handle",
            details=(f"{path}.{owner}: the caller is {principal.handle!r}",),
        )
    return {**payload, owner: principal.handle}


def bind_param(param: str, values: dict[str, Any], principal: Principal) -> dict[str, Any]:
    """``values`` with ``param`` bound to ``principal``'s handle (``principal = …`` declarations).

    Raises:
        Unauthorized: ``values`` sent another value for it.
    """
    if values.get(param, principal.handle) != principal.handle:
        raise Unauthorized(
            f"{param} is the authenticated principal's handle",
            details=(f"{param}: the caller is {principal.handle!r}",),
        )
    return {**values, param: principal.handle}


def bind_principal(request: Request, template: Template, principal: Principal | None) -> Request:
    """Fill the param an operation or a query declares as the principal's (``principal = …``).

    Raises:
        Unauthenticated: the request has no principal.
        Unauthorized: the request sent another value for that param.
    """
    payload = request.payload
    if request.operation is Operation.FETCH:
        name = payload.get("query", template.default_query)
        spec = template.queries.get(name) if isinstance(name, str) else None
        param = spec.principal if spec is not None and not spec.internal else None
        values = payload.get("params", {})
    else:
        operation = template.operations.get(request.operation)
        param = operation.principal if operation is not None else None
        values = payload
    if param is None:
        return request
    if principal is None:
        raise Unauthenticated(f"{request.operation.value} on {template.name} needs a login")
    if not isinstance(values, dict):
        return request  # validation refuses it with its own message
    bound = bind_param(param, values, principal)
    if request.operation is Operation.FETCH:
        return attrs.evolve(request, payload={**payload, "params": bound})
    return attrs.evolve(request, payload=bound)


async def check_owner(
    request: Request,
    template: Template,
    adapter: NamasteCore,
    ctx: CallContext,
    principal: Principal | None,
) -> None:
    """On update and delete, refuse a record of another owner (the admin role may).

    The owner field is bound on create and never changes (an update may not set it to another
    value), so reading it before the write cannot race with a change of owner.

    Raises:
        Unauthenticated: the request has no principal.
        Unauthorized: the record belongs to another principal, or the payload names one.
    """
    owner = template.access.owner
    if owner is None or request.operation not in (Operation.UPDATE, Operation.DELETE):
        return
    if principal is None:
        raise Unauthenticated(f"records of {template.name} have owners: log in to change one")
    if template.access.admin_role in principal.roles:
        return
    payload = request.payload
    if payload.get(owner, principal.handle) != principal.handle:
        raise Unauthorized(f"{owner} cannot be changed", details=(f"$.payload.{owner}",))
    spec = template.key_query()
    if spec is None:
        return
    key = {name: payload.get(name) for name in template.key}
    if any(value is None for value in key.values()):
        return  # validation refuses the missing key
    rows = await adapter.fetch(template, Query(spec=spec, params=key, limit=1), ctx)
    if rows and rows[0].get(owner) != principal.handle:
        raise Unauthorized(
            f"the {template.name} record belongs to another principal",
            details=(f"principal: {principal.handle}",),
        )
