"""REL long operations (CALGON): one ``CALL`` of the DBA's procedure per step.

A long operation binds a procedure (``procedure = "<tla>_name"``, the only REL key of
``[long_operations.<name>]``), called once per step with the params in declaration order, then
the step and the step count::

    CALL `spp_stats`(%s, …, %s, %s)    -- param 1 … param N, p_step (0 … steps - 1), p_steps

Its first result set is the step's records, read like a query's (:func:`beds_rel.statements.typed`,
then wire values). ``json`` params are bound as JSON text. ``verify`` checks the procedure exists
and takes N + 2 ``IN`` parameters; the worker that runs the step maps driver errors like every
other call (a step that fails with ``StoreUnavailable`` is retried, any other error fails the
ticket).

A template's retention sweep (:mod:`beds.templates.retention`) is one too: ``[retention]``
names its procedure, called as ``CALL `spn_retire`(p_before, p_limit, p_step, p_steps)``; it
retires at most ``p_limit`` records older than ``p_before`` in a transaction of its own and
returns ``SELECT n AS retired`` only when it retired some (docs/rel.md, "Retention").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from beds.errors import TemplateError
from beds.templates.model import FieldType
from beds.templates.retention import RETENTION, declared_at
from beds.values import to_wire_record
from beds_rel.bindings import Call
from beds_rel.statements import typed

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from beds.namaste import CallContext, Record
    from beds.templates.model import LongOperation, Template
    from beds_rel.statements import Row

__all__ = ("LongOperationsMixin", "long_call", "long_calls")

_KEYS = frozenset({"procedure"})
_BUILT_IN = ("step", "steps")
"""What every step receives after the params (``p_step``, ``p_steps``)."""


def _fail(template: Template, path: str, message: str) -> TemplateError:
    return TemplateError(
        f"{template.source or template.name}: {path} {message}", template=template.name
    )


def long_call(template: Template, operation: LongOperation) -> Call:
    """The call of one long operation's procedure.

    Raises:
        TemplateError: an unknown binding key, no ``procedure``, or a name that is not an
            identifier or lacks the TLA prefix; the message names ``long_operations.<name>…``.
    """
    path = declared_at(operation)  # ``retention`` for the retention sweep's [retention]
    # The sweep's binding also says which field is the age; its procedure knows it already.
    unknown = sorted(set(operation.binding) - _KEYS - ({RETENTION} if path == RETENTION else set()))
    if unknown:
        raise _fail(
            template,
            f"{path}.{unknown[0]}",
            "is not a REL binding of a long operation (a REL long operation names a procedure)",
        )
    if "procedure" not in operation.binding:
        raise _fail(template, path, "must name its stored procedure (procedure = ...)")
    name = template.object_name(operation.binding["procedure"], key=f"{path}.procedure")
    params = (*operation.params, *_BUILT_IN)
    return Call(
        kind="procedure",
        name=name,
        sql=f"CALL `{name}`({', '.join(['%s'] * len(params))})",
        params=params,
        arity=len(params),
        json_at=frozenset(
            at
            for at, param in enumerate(operation.params.values())
            if param.field.type is FieldType.JSON
        ),
        modes=("IN",) * len(params),
    )


def long_calls(template: Template) -> list[Call]:
    """The calls of every long operation the template declares, in declaration order.

    Raises:
        TemplateError: see :func:`long_call`.
    """
    return [long_call(template, operation) for operation in template.long_operations.values()]


class _Adapter(Protocol):
    """What the mixin uses of :class:`beds_rel.adapter.RelAdapter`."""

    async def _rows(self, call: Call, args: Sequence[Any]) -> list[Row]: ...


class LongOperationsMixin:
    """:class:`~beds.calgon.tickets.LongOperationRunner` for the REL adapter."""

    def prepare_long_operations(self, template: Template) -> None:
        """Check the template's long operation bindings (``RelAdapter.prepare``; no I/O).

        Raises:
            TemplateError: see :func:`long_call`.
        """
        long_calls(template)

    def long_operation_calls(self, template: Template) -> list[Call]:
        """The long operations' procedures, for ``verify`` (N params + step and steps)."""
        return long_calls(template)

    async def run_step(
        self: _Adapter,
        template: Template,
        operation: LongOperation,
        params: Mapping[str, Any],
        step: int,
        ctx: CallContext,
    ) -> list[Record]:
        """Call the operation's procedure for step ``step``; its first result set's records.

        Raises:
            DatabaseObjectMissing: the procedure does not exist.
            StoreUnavailable: MariaDB cannot be reached (the step is retried).
            StoreError: the procedure failed (its ``SIGNAL`` text in ``details``).
        """
        del ctx  # the call runs as the node's account; the ticket's event names the step
        call = long_call(template, operation)
        args = [*(params.get(name) for name in operation.params), step, operation.steps]
        rows = await self._rows(call, args)
        return [to_wire_record(typed(template, row)) for row in rows]
