"""Parse a template's retention (``retention_days`` and ``[retention]``) into its sweep.

```toml
[capabilities]
retention_days = 365          # records older than this are retired

[retention]
field = "created_at"          # the declared datetime field that is a record's age
batch_size = 500              # most records one step retires (default 1000)
procedure = "spn_retire"      # REL; REC: cool_collection = "<tla>_…" (absent: delete)
```

A template with retention gets a long operation named ``retention`` (:func:`retention_operation`)
that CALGON runs like any other: open-ended (``steps = 0``), each step retires at most ``limit``
records whose ``field`` is before ``before`` and returns ``{"retired": n}``, or no record when
none was left, which ends the ticket. The segundo role's scheduler submits it
(:mod:`beds.calgon.retention`); the name is reserved, so a template cannot declare its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.templates.model import FieldSpec, FieldType, LongOperation, LongParam, Retention
from beds.templates.reader import binding

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.templates.model import Capabilities
    from beds.templates.reader import Reader

__all__ = (
    "MAX_BATCH_SIZE",
    "RETENTION",
    "declared_at",
    "parse_retention",
    "retention_operation",
)

RETENTION = "retention"
"""The sweep's long operation name, and the key of its binding that tells adapters it is one."""
MAX_BATCH_SIZE = 10_000
_KEYS = frozenset({"field", "batch_size"})
_DEFAULT_BATCH_SIZE = 1000


def parse_retention(
    r: Reader,
    raw: Mapping[str, Any],
    capabilities: Capabilities,
    fields: Mapping[str, FieldSpec],
    long_operations: Mapping[str, LongOperation],
) -> Retention | None:
    """Read ``[retention]`` (``raw``; empty when absent), which ``retention_days`` needs.

    The table and ``capabilities.retention_days`` go together; ``field`` names one of
    ``fields``; none of the declared ``long_operations`` may be named ``retention``.

    Raises:
        TemplateError: a missing or extra table, a field that is not a declared datetime, a
            bad batch size, a declared ``retention`` long operation; naming the key path.
    """
    if RETENTION in long_operations:
        raise r.fail(
            f"long_operations.{RETENTION}",
            "is the name of the retention sweep BEDS runs (declare it with "
            "capabilities.retention_days and [retention]); choose another name",
        )
    days = capabilities.retention_days
    if days is None:
        if raw:
            raise r.fail(RETENTION, "is set without capabilities.retention_days")
        return None
    if not raw:
        raise r.fail(
            "capabilities.retention_days",
            "needs a [retention] table: field (the record's age) and the store's keys "
            "(REL: procedure; REC: cool_collection, optional)",
        )
    field = r.string(raw, "field", f"{RETENTION}.field")
    spec = fields.get(field)
    if spec is None or spec.type is not FieldType.DATETIME:
        raise r.fail(f"{RETENTION}.field", f"must name a declared datetime field, got {field!r}")
    size = r.positive(raw, "batch_size", f"{RETENTION}.batch_size")
    if size is not None and not 1 <= size <= MAX_BATCH_SIZE:
        raise r.fail(f"{RETENTION}.batch_size", f"must be from 1 to {MAX_BATCH_SIZE}")
    return Retention(
        days=days,
        field=field,
        batch_size=_DEFAULT_BATCH_SIZE if size is None else size,
        binding=binding(raw, _KEYS),
    )


def retention_operation(retention: Retention) -> LongOperation:
    """The sweep: ``retention`` with params ``before`` (datetime) and ``limit`` (int).

    Its binding is the store's keys of ``[retention]`` and ``{"retention": {"field": …}}``,
    so the adapter knows it retires records rather than running a declared pipeline or call.
    """
    before = FieldSpec(
        name="before",
        type=FieldType.DATETIME,
        description=f"Retire the records whose {retention.field} is before this.",
    )
    limit = FieldSpec(
        name="limit",
        type=FieldType.INT,
        minimum=1,
        maximum=MAX_BATCH_SIZE,
        description="Most records one step retires.",
    )
    return LongOperation(
        name=RETENTION,
        params={
            "before": LongParam(field=before),
            "limit": LongParam(field=limit, default=retention.batch_size),
        },
        steps=0,
        description=(
            f"Retire the records older than {retention.days} days (by {retention.field}), "
            f"at most `limit` per step, until none is left."
        ),
        binding={**retention.binding, RETENTION: {"field": retention.field}},
    )


def declared_at(operation: LongOperation) -> str:
    """Where the store keys of ``operation`` were declared, for adapters' error messages.

    ``retention`` for the sweep (its keys are in ``[retention]``), else
    ``long_operations.<name>``.
    """
    if operation.name == RETENTION and RETENTION in operation.binding:
        return RETENTION
    return f"long_operations.{operation.name}"
