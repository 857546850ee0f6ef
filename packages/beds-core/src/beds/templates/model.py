"""Typed template declarations: what a data domain's TOML file declares.

A template is store-agnostic here. The store-specific parts (which procedure, view or collection
an operation uses) stay in ``binding`` and ``store_options`` mappings that the store's adapter
validates when the template is registered (``NamasteCore.prepare``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs

from beds.envelopes import Operation
from beds.errors import TemplateError

__all__ = (
    "AccessRules",
    "Capabilities",
    "FieldSpec",
    "FieldType",
    "OperationSpec",
    "QuerySpec",
    "Template",
)

_OBJECT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class FieldType(enum.StrEnum):
    """Wire types a field may have."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    """ISO 8601 text on the wire; timezone-aware, or naive meaning UTC."""
    DECIMAL = "decimal"
    """Decimal text on the wire, for exact numbers (money)."""


@attrs.frozen(kw_only=True)
class FieldSpec:
    """One field of a template's records."""

    name: str
    type: FieldType
    required: bool = True
    """Must be present on create (ignored for generated fields)."""
    nullable: bool = False
    generated: bool = False
    """Assigned by the store (ids, timestamps); a request may not set it on create."""
    max_length: int | None = None
    min_length: int | None = None
    pattern: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


@attrs.frozen(kw_only=True)
class OperationSpec:
    """A write operation (create, update, delete) and the named database object behind it."""

    operation: Operation
    params: tuple[str, ...]
    """Fields the request may carry, in the order the store object takes them."""
    returns: tuple[str, ...] = ()
    """Fields returned to the caller (create: generated values)."""
    binding: Mapping[str, Any] = attrs.field(factory=dict)
    """Store-specific declaration: for example ``{"procedure": "spp_create"}``."""


@attrs.frozen(kw_only=True)
class QuerySpec:
    """A named, parameterised fetch."""

    name: str
    params: tuple[str, ...]
    """Fields the query takes; all are required."""
    max_limit: int = 100
    """Most records one fetch returns; a request may ask for fewer."""
    binding: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Capabilities:
    """Toggles a template declares (behaviour arrives with later issues; declared now)."""

    audit: bool = False
    journal: bool = False
    locking: bool = False
    cache: bool = False
    retention_days: int | None = None


@attrs.frozen(kw_only=True)
class AccessRules:
    """Which principals may do which operations; ``"*"`` means anyone."""

    rules: Mapping[Operation, frozenset[str]] = attrs.field(factory=dict)

    def allows(self, operation: Operation, principal: str | None) -> bool:
        """Return whether ``principal`` may perform ``operation``; undeclared means anyone."""
        allowed = self.rules.get(operation)
        if allowed is None or "*" in allowed:
            return True
        return principal is not None and principal in allowed


@attrs.frozen(kw_only=True)
class Template:
    """A data domain's declaration of one kind of record."""

    name: str
    store: str
    """Which adapter serves it: ``"rec"`` (MongoDB) or ``"rel"`` (MariaDB)."""
    tla: str
    """Three-letter abbreviation that prefixes every database object the template uses."""
    description: str = ""
    version: int = 1
    fields: Mapping[str, FieldSpec]
    key: tuple[str, ...]
    operations: Mapping[Operation, OperationSpec]
    queries: Mapping[str, QuerySpec]
    default_query: str | None = None
    capabilities: Capabilities = attrs.field(factory=Capabilities)
    access: AccessRules = attrs.field(factory=AccessRules)
    store_options: Mapping[str, Any] = attrs.field(factory=dict)
    """The template's ``[<store>]`` table, for the adapter."""
    source: str = ""
    """Where the declaration came from (package resource or file path)."""
    distribution: str = ""
    """The installed distribution that shipped it."""

    def key_query(self) -> QuerySpec | None:
        """The query whose params are exactly the key, if the template declares one."""
        key = set(self.key)
        return next((spec for spec in self.queries.values() if set(spec.params) == key), None)

    def object_name(self, value: Any, *, key: str) -> str:
        """Check a declared database object name and return it.

        Adapters call this for every procedure, view, function, collection or index name they read
        from ``binding`` or ``store_options``, so names are plain identifiers namespaced by the TLA.

        Raises:
            TemplateError: the name is not an identifier or lacks the ``{tla}_`` prefix.
        """
        if not isinstance(value, str) or not _OBJECT_NAME.fullmatch(value):
            raise TemplateError(
                f"{key} must be an identifier (letters, digits, _; at most 64), got {value!r}",
                template=self.name,
            )
        if not value.lower().startswith(f"{self.tla}_"):
            raise TemplateError(
                f"{key} {value!r} must start with the template's TLA prefix {self.tla + '_'!r}",
                template=self.name,
            )
        return value
