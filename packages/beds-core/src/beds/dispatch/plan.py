"""The write plan: a validated write turned into the store call that serves it, not yet started.

Validation against the template, the idempotency key's context for the adapter, the journal
flag and the audit wrapper of audited templates are decided here, before any hook or store
call runs. Fetches are planned in :mod:`beds.dispatch.reads`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs

from beds.envelopes import Operation, Request
from beds.errors import UnsupportedOperation
from beds.idempotency import fingerprint
from beds.namaste import CallContext, NamasteCore, Record
from beds.templates.model import Template
from beds.templates.validate import validate_write

if TYPE_CHECKING:
    from beds.config.model import ReliabilitySettings

__all__ = ("WRITES", "Audited", "StoreCall", "idempotent_context", "plan_write")

StoreCall = Callable[[], Awaitable[Any]]
Audited = Callable[[Template, NamasteCore, Record, CallContext, StoreCall], Awaitable[Record]]
"""Runs a write of an audited template and records its audit event."""

_Write = Callable[[NamasteCore, Template, Record, CallContext], Awaitable[Record]]
WRITES: dict[Operation, _Write] = {
    Operation.CREATE: lambda adapter, *args: adapter.create(*args),
    Operation.UPDATE: lambda adapter, *args: adapter.update(*args),
    Operation.DELETE: lambda adapter, *args: adapter.delete(*args),
}


def plan_write(
    request: Request,
    template: Template,
    adapter: NamasteCore,
    ctx: CallContext,
    *,
    reliability: ReliabilitySettings,
    audited: Audited | None,
) -> tuple[CallContext, StoreCall]:
    """Validate a write's payload; return the call context and the store call that serves it.

    Raises:
        ValidationFailed: the payload does not fit the template.
        UnsupportedOperation: the operation, or an idempotency key, is not supported.
    """
    operation = request.operation
    if operation not in WRITES:
        raise UnsupportedOperation(f"template {template.name!r} does not support {operation.value}")
    record = validate_write(template, operation, request.payload)
    if request.meta.idempotency_key is not None:
        ctx = idempotent_context(ctx, request, adapter, reliability)
    if template.capabilities.journal:
        ctx = attrs.evolve(ctx, journal=True)
    call: StoreCall = partial(WRITES[operation], adapter, template, record, ctx)
    if audited is not None:
        call = partial(audited, template, adapter, record, ctx, call)
    return ctx, call


def idempotent_context(
    ctx: CallContext,
    request: Request,
    adapter: NamasteCore,
    reliability: ReliabilitySettings,
) -> CallContext:
    """Give the adapter the key, the request's fingerprint and how long to remember them."""
    if not adapter.idempotent_writes:
        raise UnsupportedOperation(
            f"store {adapter.store!r} of template {request.template!r} does not support "
            "idempotency keys; send the write without meta.idempotency_key"
        )
    return attrs.evolve(
        ctx,
        idempotency_key=request.meta.idempotency_key,
        fingerprint=fingerprint(request),
        idempotency_ttl=reliability.idempotency_ttl,
        idempotency_lease=reliability.handler_budget + reliability.settle_grace,
        attempt=os.urandom(12).hex(),
    )
