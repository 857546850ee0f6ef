"""Validate a REC template's declarations and turn them into ready-to-run query plans.

A REC template names its collection and the indexes it relies on in its ``[rec]`` table::

    [rec]
    collection = "spf_profiles"     # required; an identifier with the TLA prefix
    indexes = ["spf_handle_uq"]     # optional; checked by verify

Write operations take no binding: create inserts, update sets (``$set``) the fields the caller
sent on the record with the key, delete removes it. Each query declares its shape; values come
only from the request's parameters, never from the shape::

    [queries.by_display_name]
    params = ["display_name"]
    filter = ["display_name"]                # equality on these params (default: none)
    projection = ["handle", "display_name"]  # fields returned (default: every field)
    order_by = ["handle"]                    # the template's declared order: pageable

A param with a condition in the query's ``where`` table (``gt``, ``in``, ...) is compared as it
says (:mod:`beds_rec.queries`) and is not listed in ``filter``. The older ``sort = [[field,
1 | -1]]`` still orders a query that does not page; a query declares ``sort`` or ``order_by``,
not both. A pageable query returns its order's fields (the node makes the cursor from them).

Generated fields: ``id`` (the text of ``_id``, see :mod:`beds_rec.values`), ``created_at``
(a datetime the adapter sets on create) and a locked template's version field (an ``int`` set
to 1 on create and incremented by every change). Any other generated field is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from beds.errors import TemplateError, ValidationFailed
from beds.templates.model import FieldType, Template
from beds_rec.values import DOC_ID, ID_FIELD, object_id, to_bson

__all__ = ("QueryPlan", "TemplatePlan", "plan_template")

CREATED_AT = "created_at"
_STORE_KEYS = ("collection", "indexes")
_QUERY_KEYS = ("filter", "projection", "sort")
_GENERATED = {ID_FIELD: FieldType.STR, CREATED_AT: FieldType.DATETIME}


@attrs.frozen(kw_only=True)
class QueryPlan:
    """A declared query, checked against the template."""

    filter: tuple[str, ...]
    """Fields matched by equality with the parameter of the same name."""
    projection: tuple[str, ...]
    """Fields returned, in order."""
    sort: tuple[tuple[str, int], ...]
    """Template fields and directions (1, -1): the query's ``order_by``, else its ``sort``."""


@attrs.frozen(kw_only=True)
class TemplatePlan:
    """Everything the adapter needs to serve one template, computed once by ``prepare``."""

    template: Template
    collection: str
    indexes: tuple[str, ...]
    id_mapped: bool
    """Whether the template's ``id`` field is the text of ``_id``."""
    stamps_created_at: bool
    """Whether create sets ``created_at`` to the current time."""
    queries: Mapping[str, QueryPlan]
    version_field: str | None = None
    """A locked template's version field (create sets it to 1, changes increment it)."""

    def document_field(self, name: str) -> str:
        """Return the document field that stores the template field ``name``."""
        return DOC_ID if self.id_mapped and name == ID_FIELD else name

    def projection(self, names: Sequence[str]) -> dict[str, int]:
        """Return a MongoDB projection of ``names``, with ``_id`` only when ``id`` is mapped."""
        projection = {DOC_ID: 0}
        projection.update((self.document_field(name), 1) for name in names)
        return projection

    def to_bson(self, name: str, value: Any, path: str) -> Any:
        """Convert a validated value of field ``name`` for MongoDB (the ``_id`` rule, decimals).

        Raises:
            ValidationFailed: an ``id`` that is not 24 hexadecimal characters, or a decimal
                ``Decimal128`` cannot hold; the detail is ``{path}.{name}``.
        """
        return self.value(name, value, f"{path}.{name}")

    def value(self, name: str, value: Any, where: str) -> Any:
        """Convert a value of field ``name`` for MongoDB; ``where`` names it in an error.

        Raises:
            ValidationFailed: as :meth:`to_bson`, with the detail ``where``.
        """
        if value is None:
            return None
        if self.id_mapped and name == ID_FIELD:
            return object_id(value, path=where, template=self.template.name)
        return to_bson(value, path=where, template=self.template.name)

    def document(
        self, names: Sequence[str], values: Mapping[str, Any], path: str
    ) -> dict[str, Any]:
        """Return the document fields of ``names`` with their ``values`` (absent ones null).

        The same mapping serves inserts, ``$set`` and equality filters.
        """
        return {
            self.document_field(name): self.to_bson(name, values.get(name), path) for name in names
        }

    @property
    def fields(self) -> tuple[str, ...]:
        """Every declared field: what a whole record (a journal's before and after) holds."""
        return tuple(self.template.fields)

    def key_filter(self, key: Mapping[str, Any]) -> dict[str, Any]:
        """Return the filter that selects the record with this key.

        Raises:
            ValidationFailed: a key field is missing or null.
        """
        absent = [name for name in self.template.key if key.get(name) is None]
        if absent:
            raise ValidationFailed(
                f"payload does not match template {self.template.name!r}",
                details=[f"$.payload.{name}: is required" for name in absent],
            )
        return self.document(self.template.key, key, "$.payload")


def plan_template(template: Template) -> TemplatePlan:
    """Check a REC template's store-specific declarations and return its plan.

    Raises:
        TemplateError: a declaration the REC adapter cannot serve.
    """
    options = template.store_options
    _reject_unknown(template, options, _STORE_KEYS, "rec")
    collection = template.object_name(options.get("collection"), key="rec.collection")
    raw_indexes = options.get("indexes", [])
    if not isinstance(raw_indexes, list):
        raise TemplateError("rec.indexes must be a list of index names", template=template.name)
    indexes = tuple(
        template.object_name(name, key=f"rec.indexes[{i}]") for i, name in enumerate(raw_indexes)
    )

    caps = template.capabilities
    version_field = caps.version_field if caps.locking else None
    generated_here = dict(_GENERATED)
    if version_field is not None:  # the core checked it is a generated int
        generated_here[version_field] = FieldType.INT
    id_mapped = False
    for field in template.fields.values():
        if not field.generated:
            continue
        expected = generated_here.get(field.name)
        if expected is None:
            raise TemplateError(
                f"fields.{field.name} is generated, but the REC store generates only "
                f"{', '.join(_GENERATED)} (and a locked template's version field)",
                template=template.name,
            )
        if field.type is not expected:
            raise TemplateError(
                f"fields.{field.name} must have type {expected.value!r} to be generated",
                template=template.name,
            )
        id_mapped = id_mapped or field.name == ID_FIELD

    for operation, spec in template.operations.items():
        if spec.binding:
            raise TemplateError(
                f"operations.{operation.value}.{sorted(spec.binding)[0]} is not a REC key: "
                "write operations use the collection and take no binding",
                template=template.name,
            )
        settable = [
            name for name in spec.params if name not in template.key and name != version_field
        ]
        generated = [name for name in settable if template.fields[name].generated]
        if generated:
            raise TemplateError(
                f"operations.{operation.value}.params names generated field {generated[0]!r}",
                template=template.name,
            )

    queries = {name: _plan_query(template, name) for name in template.queries}
    return TemplatePlan(
        template=template,
        collection=collection,
        indexes=indexes,
        id_mapped=id_mapped,
        stamps_created_at=CREATED_AT in template.fields and template.fields[CREATED_AT].generated,
        queries=queries,
        version_field=version_field,
    )


def _plan_query(template: Template, name: str) -> QueryPlan:
    spec = template.queries[name]
    path = f"queries.{name}"
    binding = spec.binding
    _reject_unknown(template, binding, _QUERY_KEYS, path)

    filter_ = _names(template, binding, "filter", path, default=())
    for field in filter_:
        if field not in spec.params:
            raise TemplateError(
                f"{path}.filter names {field!r}, which is not a param of the query",
                template=template.name,
            )
        if field in spec.where:
            raise TemplateError(
                f"{path}.filter names {field!r}, which {path}.where compares already: "
                "name it in one of them",
                template=template.name,
            )
    unused = [param for param in spec.params if param not in filter_ and param not in spec.where]
    if unused:
        raise TemplateError(
            f"{path}.params declares {unused[0]!r}, which neither the filter nor where uses",
            template=template.name,
        )
    projection = _names(template, binding, "projection", path, default=tuple(template.fields))
    if not projection:
        raise TemplateError(f"{path}.projection must name a field", template=template.name)
    if spec.order_by:
        unseen = [key.field for key in spec.order_by if key.field not in projection]
        if unseen:
            raise TemplateError(
                f"{path}.projection must include the order_by field {unseen[0]!r}: the "
                "cursor of the next page is made from the last record's order fields",
                template=template.name,
            )
        if "sort" in binding:
            raise TemplateError(
                f"{path}.sort and {path}.order_by are both declared: keep order_by, which "
                "orders the query and lets it page",
                template=template.name,
            )
        order = tuple((key.field, -1 if key.descending else 1) for key in spec.order_by)
        return QueryPlan(filter=filter_, projection=projection, sort=order)

    sort: list[tuple[str, int]] = []
    raw_sort = binding.get("sort", [])
    if not isinstance(raw_sort, list):
        raise TemplateError(
            f"{path}.sort must be a list of [field, 1 | -1]", template=template.name
        )
    for i, item in enumerate(raw_sort):
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and item[1] in (1, -1)
            and not isinstance(item[1], bool)
        ):
            raise TemplateError(
                f"{path}.sort[{i}] must be [field, 1] or [field, -1]", template=template.name
            )
        _check_field(template, item[0], f"{path}.sort[{i}]")
        sort.append((item[0], item[1]))
    if len({field for field, _ in sort}) != len(sort):
        raise TemplateError(f"{path}.sort names a field twice", template=template.name)
    return QueryPlan(filter=filter_, projection=projection, sort=tuple(sort))


def _reject_unknown(
    template: Template, table: Mapping[str, Any], known: tuple[str, ...], path: str
) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise TemplateError(
            f"{path}.{unknown[0]} is not a REC key (expected one of {', '.join(known)})",
            template=template.name,
        )


def _names(
    template: Template,
    binding: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: tuple[str, ...],
) -> tuple[str, ...]:
    value = binding.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TemplateError(f"{path}.{key} must be a list of field names", template=template.name)
    for item in value:
        _check_field(template, item, f"{path}.{key}")
    if len(set(value)) != len(value):
        raise TemplateError(f"{path}.{key} names a field twice", template=template.name)
    return tuple(value)


def _check_field(template: Template, name: str, path: str) -> None:
    if name not in template.fields:
        raise TemplateError(
            f"{path} names {name!r}, which is not a declared field", template=template.name
        )
