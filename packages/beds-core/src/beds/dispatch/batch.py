"""Batches: ``create_many``, ``update_many``, ``delete_many`` and ``fetch_many`` in one store call.

The steps of a single write, once per batch and a tight loop per item (docs/wire-contract.md,
"Batches"): the payload's shape and size → access (the single operation's rule; owner and
principal fields bound per record; owners of updated or deleted records read through ONE
``fetch_many``) → per-item validation → the idempotency context (one fingerprint for the whole
request) → before-dispatch hooks → ONE store call (deadline, retries, one ``db`` lineage event)
→ audit (one event per written item, before and after read in one call each) → one cache
invalidation → live events → the answer: one result per item, in request order, status 207
when some failed. A template with ``[batch] atomic = true`` fails as a whole instead.

An adapter with the ``batch`` feature (:class:`~beds.namaste.BatchStore`) serves the batch in
as few round trips as its store allows; any other is called record by record here (no
idempotency key then: it could not make the whole batch run once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

from beds.dispatch.access import authorize, bind_param, own_record
from beds.dispatch.batch_store import (
    BatchHost,
    Outcome,
    batched,
    key_of,
    read_many,
    run_batch,
    write_context,
    written,
)
from beds.envelopes import BATCH_OPERATIONS, Consistency, Operation
from beds.errors import (
    MalformedRequest,
    NotFound,
    RequestError,
    Unauthenticated,
    Unauthorized,
    UnsupportedOperation,
)
from beds.templates.validate_many import validate_keys, validate_many
from beds.values import json_type

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.auth.principal import Principal
    from beds.envelopes import Request
    from beds.namaste import CallContext, NamasteCore, Record
    from beds.templates.model import QuerySpec, Template

__all__ = ("MULTI_STATUS", "BatchAnswer", "BatchHost", "serve_batch")

_ITEMS: Final = {Operation.FETCH_MANY: "keys"}
"""The payload key holding a batch's items (``records`` for the writes)."""
_OPTIONS: Final = {Operation.FETCH_MANY: frozenset({"keys", "consistency"})}
_STATUS_ALL_OK: Final = {Operation.CREATE_MANY: 201}
MULTI_STATUS: Final = 207
"""A batch where some items failed (the others succeeded, as their results say)."""
_READS_BEFORE: Final = frozenset({Operation.UPDATE, Operation.DELETE})


@attrs.frozen
class BatchAnswer:
    """What a batch answers: ``{"results", "succeeded", "failed"}`` and the envelope status."""

    status: int
    data: dict[str, Any]


def _items(request: Request, limit: int) -> list[Any]:
    """The payload's items, once its shape and size are checked.

    Raises:
        MalformedRequest: another payload key, items that are not an array of 1 to ``limit``.
    """
    operation = request.operation
    name = _ITEMS.get(operation, "records")
    payload = request.payload
    allowed = _OPTIONS.get(operation, frozenset({name}))
    problems = [
        f"$.{key}: is not a {operation.value} key ({', '.join(sorted(allowed))})"
        for key in sorted(set(payload) - allowed)
    ]
    items = payload.get(name)
    if not isinstance(items, list):
        what = "is required" if name not in payload else f"must be an array, got {json_type(items)}"
        problems.append(f"$.{name}: {what}")
    elif not 1 <= len(items) <= limit:
        problems.append(f"$.{name}: must hold 1 to {limit} items, got {len(items)}")
    if problems:
        raise MalformedRequest(f"not a valid {operation.value} payload", details=problems)
    return items  # type: ignore[return-value]  # checked: a list


def _key_spec(template: Template) -> QuerySpec:
    spec = template.key_query()
    if spec is None or spec.internal:
        raise UnsupportedOperation(
            f"template {template.name!r} does not support fetch_many",
            details=("fetch_many reads through a query whose params are exactly the key",),
        )
    return spec


def _consistency(template: Template, request: Request) -> Consistency:
    """Where ``fetch_many`` reads: ``secondary`` where asked; the primary otherwise.

    ``cached`` (allowed where the template caches) reads the primary: the node's fetch cache
    keeps whole fetch pages, not records by key.
    """
    asked = request.payload.get("consistency", template.capabilities.consistency.value)
    try:
        consistency = Consistency(asked) if isinstance(asked, str) else None
    except ValueError:
        consistency = None
    if consistency is None:
        choices = ", ".join(c.value for c in Consistency)
        raise MalformedRequest(
            "not a valid fetch_many payload", details=(f"$.consistency: must be one of {choices}",)
        )
    if consistency is Consistency.CACHED and not template.capabilities.cache:
        raise MalformedRequest(
            "not a valid fetch_many payload",
            details=(f"$.consistency: template {template.name!r} caches nothing",),
        )
    return Consistency.SECONDARY if consistency is Consistency.SECONDARY else Consistency.PRIMARY


def _bind(
    template: Template,
    single: Operation,
    items: list[Any],
    principal: Principal | None,
    outcomes: list[Outcome | None],
) -> list[Any]:
    """The items with their owner and principal params bound (a refused one's outcome set).

    Raises:
        Unauthenticated: the template binds a principal and the request has none.
    """
    if single is Operation.FETCH:
        param = _key_spec(template).principal
        owner = None
    else:
        spec = template.operations.get(single)
        param = spec.principal if spec is not None else None
        owner = template.access.owner if single is Operation.CREATE else None
    if param is None and owner is None:
        return items
    if principal is None:
        raise Unauthenticated(
            f"records of {template.name} have owners: log in to create them"
            if owner is not None
            else f"{single.value} on {template.name} needs a login"
        )
    bound = list(items)
    for index, item in enumerate(items):
        if type(item) is not dict:
            continue  # validation refuses it with its own message
        try:
            if owner is not None:
                item = own_record(template, owner, item, principal, f"$.records[{index}]")
            if param is not None:
                item = bind_param(param, item, principal)
        except Unauthorized as exc:
            outcomes[index] = exc
        bound[index] = item
    return bound


async def _check_owners(
    template: Template,
    adapter: NamasteCore,
    ctx: CallContext,
    principal: Principal | None,
    records: list[Record],
    sent: list[int],
    outcomes: list[Outcome | None],
) -> None:
    """update_many/delete_many: refuse each record of another owner (one read for all).

    ``records`` are the validated records, ``sent`` their items' indexes.
    """
    owner = template.access.owner
    if owner is None:
        return
    if principal is None:
        raise Unauthenticated(f"records of {template.name} have owners: log in to change them")
    if template.access.admin_role in principal.roles:
        return
    handle = principal.handle
    checked: list[tuple[int, Record]] = []
    for index, record in zip(sent, records, strict=True):
        if record.get(owner, handle) != handle:
            outcomes[index] = Unauthorized(
                f"{owner} cannot be changed", details=(f"$.records[{index}].{owner}",)
            )
        else:
            checked.append((index, key_of(template, record) or {}))
    rows = await read_many(adapter, template, [key for _, key in checked], ctx)
    refused = Unauthorized(
        f"the {template.name} record belongs to another principal",
        details=(f"principal: {handle}",),
    )
    for (index, _), row in zip(checked, rows, strict=True):
        if row is not None and row.get(owner) != handle:
            outcomes[index] = refused


def _item(status: int, outcome: Outcome | None) -> dict[str, Any]:
    if isinstance(outcome, RequestError):
        return {
            "ok": False,
            "status": outcome.STATUS,
            "error": {
                "code": outcome.CODE,
                "message": outcome.message,
                "details": list(outcome.details),
            },
        }
    if outcome is None:  # fetch_many: no record has that key
        return {
            "ok": False,
            "status": NotFound.STATUS,
            "error": {"code": NotFound.CODE, "message": "no record has that key", "details": []},
        }
    return {"ok": True, "status": status, "data": outcome}


def _all_or_nothing(name: str, outcomes: Sequence[Outcome | None]) -> RequestError:
    """The error of an atomic batch with failures: the first one's class, every one listed."""
    failures = [
        (index, outcome)
        for index, outcome in enumerate(outcomes)
        if isinstance(outcome, RequestError)
    ]
    first = failures[0][1]
    error = type(first)(
        f"the batch is all or nothing and {len(failures)} of {len(outcomes)} items failed; "
        "nothing was written",
        details=[f"{name}[{index}]: {failure.message}" for index, failure in failures],
    )
    if type(first) is RequestError:  # an unknown code rebuilt from a reply: keep it visible
        error.CODE = first.CODE  # type: ignore[misc]
    return error


async def serve_batch(
    host: BatchHost,
    request: Request,
    template: Template,
    adapter: NamasteCore,
    ctx: CallContext,
    principal: Principal | None,
    timings: dict[str, float],
) -> BatchAnswer:
    """Serve one batch request (see the module docstring).

    Raises:
        RequestError: a request-level refusal (payload shape or size, access, an operation or
            idempotency key the template or store cannot serve, an atomic batch with a failing
            item) or a failure of the whole store call; nothing was written by the node then.
    """
    operation = request.operation
    single = BATCH_OPERATIONS[operation]
    name = _ITEMS.get(operation, "records")
    key_spec = _key_spec(template) if single is Operation.FETCH else None
    if key_spec is None and single not in template.operations:
        declared = ", ".join(sorted(op.value for op in template.operations)) or "none"
        raise UnsupportedOperation(
            f"template {template.name!r} does not support {operation.value}",
            details=(f"declared: {declared}",),
        )
    if host.handlers.get((template.name, single)) is not None:
        raise UnsupportedOperation(
            f"{single.value} on {template.name} runs the domain's handler: send one "
            f"{single.value} per record"
        )
    authorize(request, template, principal, single)
    items = _items(request, template.batch.limit(host.max_batch_records))
    if key_spec is not None:
        ctx = attrs.evolve(ctx, consistency=_consistency(template, request))
    fast = batched(adapter)
    atomic = template.batch.atomic and single is not Operation.FETCH
    if atomic and not fast:
        raise UnsupportedOperation(
            f"store {adapter.store!r} cannot write a batch all or nothing "
            f"([batch] atomic = true of {template.name} needs the store's batch feature)"
        )
    outcomes: list[Outcome | None] = [None] * len(items)
    bound = _bind(template, single, items, principal, outcomes)
    checked = (
        validate_keys(template, key_spec, bound)
        if key_spec is not None
        else validate_many(template, single, bound)
    )
    records: list[Record] = []
    sent: list[int] = []
    for index, result in enumerate(checked):
        if outcomes[index] is not None:
            continue  # refused while its owner was bound
        if isinstance(result, RequestError):
            outcomes[index] = result
        else:
            records.append(result)
            sent.append(index)
    if single in _READS_BEFORE:
        await _check_owners(template, adapter, ctx, principal, records, sent, outcomes)
        kept = [(i, r) for i, r in zip(sent, records, strict=True) if outcomes[i] is None]
        sent, records = [i for i, _ in kept], [r for _, r in kept]
    if atomic and len(sent) < len(items):
        raise _all_or_nothing(name, outcomes)
    if records:
        ctx = write_context(host, request, template, adapter, ctx, single, fast)
        await host.before_dispatch(request, template)
        results = await run_batch(
            host, request, template, adapter, ctx, single, records, fast, timings
        )
        for index, outcome in zip(sent, results, strict=True):
            outcomes[index] = outcome
        if atomic and any(isinstance(r, RequestError) for r in results):
            raise _all_or_nothing(name, outcomes)
        if single is not Operation.FETCH:
            await written(host, request, template, ctx, single, bound, sent, results)
    status = _STATUS_ALL_OK.get(operation, 200)
    answered = [_item(status, outcome) for outcome in outcomes]
    failed = sum(1 for item in answered if not item["ok"])
    return BatchAnswer(
        status=MULTI_STATUS if failed else status,
        data={"results": answered, "succeeded": len(answered) - failed, "failed": failed},
    )
