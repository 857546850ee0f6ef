"""Parse a template's ``[capabilities]`` table and refuse combinations that cannot work.

Every capability does what it says, or the template is refused here, when it is loaded: a
declaration never promises a feature that does not exist (docs/templates.md, "Capabilities").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.envelopes import Operation
from beds.templates.model import (
    HISTORY_QUERY,
    Capabilities,
    Consistency,
    FieldSpec,
    FieldType,
    OperationSpec,
    QuerySpec,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.templates.reader import Reader

__all__ = ("parse_capabilities",)

_KEYS = frozenset(
    {
        "audit",
        "journal",
        "locking",
        "version_field",
        "cache",
        "cache_ttl",
        "cache_size",
        "consistency",
        "retention_days",
        "live",
    }
)
_LATER: dict[str, str] = {}
"""Capabilities of the design not built yet: refused with why, never accepted without effect."""
MAX_RETENTION_DAYS = 36_500


def parse_capabilities(
    r: Reader,
    caps: Mapping[str, Any],
    fields: Mapping[str, FieldSpec],
    key: tuple[str, ...],
    operations: Mapping[Operation, OperationSpec],
    queries: Mapping[str, QuerySpec],
) -> Capabilities:
    """Read ``[capabilities]`` and check it against the rest of the template.

    Raises:
        TemplateError: an unknown key, a bad value, or a capability the template cannot have,
            naming ``capabilities.<key>``.
    """
    for name in sorted(set(caps) - _KEYS):
        raise r.fail(f"capabilities.{name}", _LATER.get(name, "is not a capability"))
    cache = r.boolean(caps, "cache", "capabilities.cache", False)
    consistency_name = r.string(
        caps,
        "consistency",
        "capabilities.consistency",
        Consistency.CACHED.value if cache else Consistency.PRIMARY.value,
    )
    try:
        consistency = Consistency(consistency_name)
    except ValueError:
        choices = ", ".join(c.value for c in Consistency)
        raise r.fail(
            "capabilities.consistency", f"must be one of {choices}, got {consistency_name!r}"
        ) from None
    capabilities = Capabilities(
        audit=r.boolean(caps, "audit", "capabilities.audit", False),
        journal=r.boolean(caps, "journal", "capabilities.journal", False),
        locking=r.boolean(caps, "locking", "capabilities.locking", False),
        version_field=r.string(caps, "version_field", "capabilities.version_field", "version"),
        cache=cache,
        cache_ttl=_cache_ttl(r, caps),
        cache_size=_cache_size(r, caps),
        consistency=consistency,
        retention_days=_retention_days(r, caps),
        live=r.boolean(caps, "live", "capabilities.live", False),
    )
    _check(r, caps, capabilities, fields, key, operations, queries)
    return capabilities


def _cache_ttl(r: Reader, caps: Mapping[str, Any]) -> float:
    ttl = r.number(caps, "cache_ttl", "capabilities.cache_ttl")
    if ttl is None:
        return 30.0
    if not 0 < ttl <= 86400:
        raise r.fail("capabilities.cache_ttl", "must be more than 0 and at most 86400 seconds")
    return ttl


def _cache_size(r: Reader, caps: Mapping[str, Any]) -> int:
    size = r.positive(caps, "cache_size", "capabilities.cache_size")
    if size is None:
        return 1000
    if not 1 <= size <= 1_000_000:
        raise r.fail("capabilities.cache_size", "must be from 1 to 1000000")
    return size


def _retention_days(r: Reader, caps: Mapping[str, Any]) -> int | None:
    days = caps.get("retention_days")
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise r.fail(
            "capabilities.retention_days",
            f"must be a whole number of days from 1 to {MAX_RETENTION_DAYS}",
        )
    return days


def _check(
    r: Reader,
    caps: Mapping[str, Any],
    capabilities: Capabilities,
    fields: Mapping[str, FieldSpec],
    key: tuple[str, ...],
    operations: Mapping[Operation, OperationSpec],
    queries: Mapping[str, QuerySpec],
) -> None:
    has_key_query = any(set(q.params) == set(key) for q in queries.values())
    for name in ("audit", "journal"):
        if getattr(capabilities, name) and operations and not has_key_query:
            raise r.fail(
                f"capabilities.{name}",
                f"needs a query whose params are exactly the key {list(key)} (to read the "
                "record before and after each write)",
            )
    if capabilities.journal:
        if not operations:
            raise r.fail("capabilities.journal", "is set on a template without writes")
        if HISTORY_QUERY in queries:
            raise r.fail(
                f"queries.{HISTORY_QUERY}",
                "is the name of a journaled template's history query; choose another",
            )
    if capabilities.locking:
        _check_locking(r, capabilities.version_field, fields, operations)
    elif "version_field" in caps:
        raise r.fail("capabilities.version_field", "is set without locking = true")
    if capabilities.cache:
        if not any(not q.internal for q in queries.values()):
            raise r.fail("capabilities.cache", "is set on a template without queries to cache")
    else:
        for name in ("cache_ttl", "cache_size"):
            if name in caps:
                raise r.fail(f"capabilities.{name}", "is set without cache = true")
        if capabilities.consistency is Consistency.CACHED:
            raise r.fail("capabilities.consistency", "is 'cached' without cache = true")
    if capabilities.consistency is not Consistency.PRIMARY and not queries:
        raise r.fail("capabilities.consistency", "is set on a template without queries")
    if capabilities.live:
        _check_live(r, fields, operations)


def _check_live(
    r: Reader, fields: Mapping[str, FieldSpec], operations: Mapping[Operation, OperationSpec]
) -> None:
    if not operations:
        raise r.fail("capabilities.live", "is set on a template without writes")
    secret = sorted(name for name, spec in fields.items() if spec.secret)
    if secret:
        # Live events reach every node and, through an edge, browsers: refused, not filtered,
        # so a declaration never looks live-safe while hiding what it leaves out.
        raise r.fail(
            "capabilities.live",
            f"cannot be set on a template with a secret field ({', '.join(secret)}): live "
            "events are read by every node of the environment",
        )


def _check_locking(
    r: Reader,
    version: str,
    fields: Mapping[str, FieldSpec],
    operations: Mapping[Operation, OperationSpec],
) -> None:
    spec = fields.get(version)
    if spec is None:
        raise r.fail(
            "capabilities.locking",
            f"needs a version field: declare [fields.{version}] (type int, generated = true) "
            "or name another with capabilities.version_field",
        )
    if spec.type is not FieldType.INT or not spec.generated or spec.nullable:
        raise r.fail(
            f"fields.{version}",
            "is the locking version: it must be type int, generated = true (the store sets it) "
            "and not nullable",
        )
    changes = [op for op in (Operation.UPDATE, Operation.DELETE) if op in operations]
    if not changes:
        raise r.fail("capabilities.locking", "is set on a template without update or delete")
    for operation in changes:
        if version not in operations[operation].params:
            raise r.fail(
                f"operations.{operation.value}.params",
                f"must include {version!r}: a locked record is changed only at the version "
                "its sender read",
            )
