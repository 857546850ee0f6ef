"""The domain description as data: frozen attrs classes, read by every generator module.

:mod:`beds.generator.description` builds them from TOML and checks every rule; the generator
modules only read them, so each may assume a valid description.
"""

from __future__ import annotations

from typing import Any

import attrs
import cattrs

__all__ = (
    "Access",
    "Capabilities",
    "Domain",
    "Entity",
    "Field",
    "LongOperation",
    "Query",
    "Where",
    "from_snapshot",
    "snapshot",
)


@attrs.frozen
class Field:
    """One field an entity declares (the generator adds ids, timestamps and versions)."""

    name: str
    type: str
    required: bool = True
    nullable: bool = False
    max_length: int | None = None
    min_length: int | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    unique: bool = False
    references: str | None = None
    example: Any = None
    description: str = ""
    generated: bool = False


@attrs.frozen
class Where:
    """A query param compared with a field by an operator other than equality."""

    param: str
    field: str
    op: str


@attrs.frozen
class Query:
    """A named fetch: equality on ``by``, ranges in ``where``, ``order_by``, a page size."""

    name: str
    by: tuple[str, ...] = ()
    where: tuple[Where, ...] = ()
    order_by: tuple[str, ...] = ()
    page_size: int = 50
    principal: str | None = None
    description: str = ""

    @property
    def params(self) -> tuple[str, ...]:
        """The template params: the equality fields, then the ``where`` params."""
        return (*self.by, *(w.param for w in self.where))


@attrs.frozen
class Capabilities:
    """The template capabilities the entity asks for."""

    audit: bool = False
    journal: bool = False
    locking: bool = False
    version_field: str = "version"
    cache: bool = False
    cache_ttl: int | None = None
    retention_days: int | None = None


@attrs.frozen
class Access:
    """Who may do what (roles, ``authenticated`` or ``*``); ``None``: no rule."""

    create: tuple[str, ...] | None = None
    update: tuple[str, ...] | None = None
    delete: tuple[str, ...] | None = None
    fetch: tuple[str, ...] | None = None
    submit: tuple[str, ...] | None = None
    owner: str | None = None


@attrs.frozen
class LongOperation:
    """A background count of the entity's records per value of ``count_by``, in ``steps``."""

    name: str
    count_by: str
    steps: int = 1
    description: str = ""


@attrs.frozen
class Entity:
    """One kind of record: becomes one template and its store objects."""

    name: str
    store: str
    tla: str
    fields: tuple[Field, ...]
    key: tuple[str, ...] = ("id",)
    operations: tuple[str, ...] = ("create", "update", "delete")
    queries: tuple[Query, ...] = ()
    capabilities: Capabilities = Capabilities()
    access: Access = Access()
    long_operations: tuple[LongOperation, ...] = ()
    description: str = ""

    def field(self, name: str) -> Field:
        """The field called ``name`` (declared or added by the generator)."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)


@attrs.frozen
class Domain:
    """A whole description: the package's name and its entities, in declaration order."""

    name: str
    entities: tuple[Entity, ...]
    description: str = ""
    version: str = "0.1.0"

    @property
    def distribution(self) -> str:
        """The distribution name, ``beds-<name>`` with dashes."""
        return "beds-" + self.name.replace("_", "-")

    @property
    def package(self) -> str:
        """The import name, ``beds_<name>``."""
        return f"beds_{self.name}"

    def template_name(self, entity: Entity) -> str:
        """The template's name: ``<domain>_<entity>``."""
        return f"{self.name}_{entity.name}"

    def entity(self, name: str) -> Entity:
        """The entity called ``name``."""
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)


_CONVERTER = cattrs.Converter()


def snapshot(domain: Domain) -> dict[str, Any]:
    """The description as plain JSON data (the lock file's content, compared by diff)."""
    data: dict[str, Any] = _CONVERTER.unstructure(domain)
    return data


def from_snapshot(data: dict[str, Any]) -> Domain:
    """The description a lock file holds.

    Raises:
        cattrs.errors.ClassValidationError: ``data`` is not a snapshot.
    """
    return _CONVERTER.structure(data, Domain)
