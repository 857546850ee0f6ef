"""The domain description format: TOML in, a checked :class:`~beds.generator.model.Domain` out.

```toml
[domain]
name = "library"
[entities.book]
store = "rel"
tla = "lbk"
[entities.book.fields.title]
type = "str"
max_length = 200
[entities.book.queries.by_title]
by = ["title"]
```

Every rule is checked here, before anything is generated, and the first problem is raised as a
:class:`DescriptionError` naming the file and the key path (``entities.book.fields.title.type``),
like a configuration error. The generator adds what every entity needs (an ``id`` key unless
``key`` is given, ``created_at``, REL's ``updated_at``, the locking version's ``generated``), so
the names ``id``, ``created_at`` and ``updated_at`` are the generator's.

Why this module is long: it is the single place that turns untrusted text into a description the
generator may trust, and it reads every key of the format with its own error; splitting the
reading from the cross-entity checks would spread one key path over two files.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from beds.errors import ConfigError
from beds.generator.model import (
    Access,
    Capabilities,
    Domain,
    Entity,
    Field,
    LongOperation,
    Query,
    Where,
)
from beds.generator.names import MAX_NAME, TLA, name_problem

__all__ = (
    "ADDED_FIELDS",
    "FIELD_TYPES",
    "LIMITS",
    "DescriptionError",
    "check_installed",
    "parse_description",
    "read_description",
)

FIELD_TYPES = ("str", "int", "float", "bool", "datetime", "decimal", "json")
STORES = ("rel", "rec")
OPERATIONS = ("create", "update", "delete")
WHERE_OPS = ("eq", "gt", "gte", "lt", "lte", "in")
ACCESS_KEYS = ("create", "update", "delete", "fetch", "submit")
ADDED_FIELDS = frozenset({"id", "created_at", "updated_at"})

# Sane limits: a description is untrusted input (an AI front end writes them too). Each bounds
# what one description can make the generator write or the database hold.
LIMITS: dict[str, int] = {
    "bytes": 256 * 1024,
    "entities": 32,
    "fields": 48,
    "queries": 16,
    "long_operations": 4,
    "text": 500,
    "pattern": 200,
    "roles": 16,
    "page_size": 1000,
    "max_length": 1_000_000,
    "steps": 64,
    "domain_name": 24,
    "entity_name": 24,
}
_INDEXED_STR = 255  # longest VARCHAR the REL generator indexes (255 * 4 bytes < 3072)
_ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_VERSION = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}$")
_RANGE_TYPES = frozenset({"str", "int", "float", "datetime"})


class DescriptionError(ConfigError):
    """A domain description is invalid: ``file`` and ``key`` name where."""


class _Reader:
    """Typed look-ups that fail with the description's file and key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> DescriptionError:
        return DescriptionError(f"{key} {message}", file=self.source, key=key)

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(path, "must be a table")
        return value

    def only(self, data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise self.fail(where, f"is not a key here (expected one of {', '.join(allowed)})")

    def text(self, data: Mapping[str, Any], key: str, path: str, default: str | None) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(path, "must be a string" if key in data else "is required")
        if len(value) > LIMITS["text"]:
            raise self.fail(path, f"must be at most {LIMITS['text']} characters")
        if any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise self.fail(path, "must not hold control characters")
        return value

    def name(self, value: Any, path: str, max_length: int = MAX_NAME) -> str:
        problem = name_problem(value, max_length=max_length)
        if problem:
            raise self.fail(path, problem)
        return str(value)

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value

    def integer(
        self, data: Mapping[str, Any], key: str, path: str, low: int, high: int
    ) -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be an integer from {low} to {high}")
        return value

    def number(self, data: Mapping[str, Any], key: str, path: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, "must be a number")
        if not math.isfinite(value) or abs(value) > 2**53:
            raise self.fail(path, "must be a finite number of at most 2**53")
        return float(value)

    def names(self, data: Mapping[str, Any], key: str, path: str, limit: int) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(path, "must be a list of names")
        if len(value) > limit:
            raise self.fail(path, f"must list at most {limit} names")
        out = tuple(self.name(v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(set(out)) != len(out):
            raise self.fail(path, "lists a name twice")
        return out


def read_description(path: str) -> Domain:
    """Read and check the description file at ``path``.

    Raises:
        DescriptionError: the file cannot be read, is not TOML, or breaks a rule.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(LIMITS["bytes"] + 1)
    except OSError as exc:
        raise DescriptionError(f"cannot read the description: {exc.strerror}", file=path) from exc
    if len(data) > LIMITS["bytes"]:
        raise DescriptionError(f"is larger than {LIMITS['bytes']} bytes", file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DescriptionError("is not UTF-8 text", file=path) from None
    return parse_description(text, source=path)


def parse_description(text: str | Mapping[str, Any], *, source: str = "<description>") -> Domain:
    """Check a description (TOML text, or the table it parses to) and return it.

    Raises:
        DescriptionError: the first problem, naming ``source`` and the key path.
    """
    r = _Reader(source)
    if isinstance(text, str):
        if len(text.encode("utf-8", "surrogatepass")) > LIMITS["bytes"]:
            raise DescriptionError(f"is larger than {LIMITS['bytes']} bytes", file=source)
        try:
            data: Mapping[str, Any] = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DescriptionError(f"not valid TOML: {exc}", file=source) from None
    else:
        data = text
    r.only(data, ("domain", "entities"), "")
    head = r.table(data, "domain", "domain")
    r.only(head, ("name", "description", "version"), "domain")
    if "name" not in head:
        raise r.fail("domain.name", "is required")
    name = r.name(head["name"], "domain.name", LIMITS["domain_name"])
    version = r.text(head, "version", "domain.version", "0.1.0")
    if not _VERSION.fullmatch(version):
        raise r.fail("domain.version", "must be a version such as 0.1.0")
    raw_entities = r.table(data, "entities", "entities")
    if not raw_entities:
        raise r.fail("entities", "must declare at least one entity")
    if len(raw_entities) > LIMITS["entities"]:
        raise r.fail("entities", f"must declare at most {LIMITS['entities']} entities")
    entities = tuple(
        _entity(r, str(key), raw, f"entities.{key}") for key, raw in raw_entities.items()
    )
    domain = Domain(
        name=name,
        entities=entities,
        description=r.text(head, "description", "domain.description", ""),
        version=version,
    )
    _check_domain(r, domain)
    return domain


def _entity(r: _Reader, name: str, raw: Any, path: str) -> Entity:
    if not isinstance(raw, Mapping):
        raise r.fail(path, "must be a table")
    r.name(name, path, LIMITS["entity_name"])
    r.only(
        raw,
        (
            "store",
            "tla",
            "description",
            "key",
            "operations",
            "fields",
            "queries",
            "capabilities",
            "access",
            "long_operations",
        ),
        path,
    )
    store = r.text(raw, "store", f"{path}.store", None)
    if store not in STORES:
        raise r.fail(f"{path}.store", f"must be one of {', '.join(STORES)}, got {store!r}")
    tla = r.text(raw, "tla", f"{path}.tla", None)
    if not TLA.fullmatch(tla):
        raise r.fail(f"{path}.tla", f"must be three lower-case letters, got {tla!r}")
    raw_fields = r.table(raw, "fields", f"{path}.fields")
    if not raw_fields:
        raise r.fail(f"{path}.fields", "must declare at least one field")
    if len(raw_fields) > LIMITS["fields"]:
        raise r.fail(f"{path}.fields", f"must declare at most {LIMITS['fields']} fields")
    declared = [
        _field(r, str(key), value, f"{path}.fields.{key}", store)
        for key, value in raw_fields.items()
    ]
    capabilities = _capabilities(r, r.table(raw, "capabilities", f"{path}.capabilities"), path)
    explicit_key = "key" in raw
    key = r.names(raw, "key", f"{path}.key", 4) if explicit_key else ("id",)
    if explicit_key and not key:
        raise r.fail(f"{path}.key", "must name at least one field")
    fields = _complete_fields(r, declared, store, capabilities, explicit_key, path)
    by_name = {f.name: f for f in fields}
    for i, key_name in enumerate(key):
        field = by_name.get(key_name)
        if field is None:
            raise r.fail(f"{path}.key[{i}]", f"names {key_name!r}, which is not a declared field")
        if field.nullable or field.type not in ("str", "int", "datetime"):
            raise r.fail(
                f"{path}.key[{i}]",
                f"names {key_name!r}: a key field is a str, int or datetime and not nullable",
            )
        _check_indexable(r, field, store, f"{path}.key[{i}]")
    operations = (
        r.names(raw, "operations", f"{path}.operations", 3) if "operations" in raw else OPERATIONS
    )
    for i, operation in enumerate(operations):
        if operation not in OPERATIONS:
            raise r.fail(f"{path}.operations[{i}]", f"must be one of {', '.join(OPERATIONS)}")
    operations = tuple(o for o in OPERATIONS if o in operations)
    if "create" not in operations:
        raise r.fail(f"{path}.operations", "must include create (records must come from somewhere)")
    entity = Entity(
        name=name,
        store=store,
        tla=tla,
        fields=fields,
        key=key,
        operations=operations,
        capabilities=capabilities,
        description=r.text(raw, "description", f"{path}.description", ""),
    )
    queries = _queries(r, r.table(raw, "queries", f"{path}.queries"), entity, path)
    long_operations = _long_operations(
        r, r.table(raw, "long_operations", f"{path}.long_operations"), entity, path
    )
    access = _access(
        r, r.table(raw, "access", f"{path}.access"), entity, path, bool(long_operations)
    )
    entity = Entity(
        name=name,
        store=store,
        tla=tla,
        fields=fields,
        key=key,
        operations=operations,
        queries=queries,
        capabilities=capabilities,
        access=access,
        long_operations=long_operations,
        description=entity.description,
    )
    _check_capabilities(r, entity, path)
    return entity


_FIELD_KEYS = (
    "type",
    "required",
    "nullable",
    "max_length",
    "min_length",
    "pattern",
    "minimum",
    "maximum",
    "unique",
    "references",
    "example",
    "description",
)


def _field(r: _Reader, name: str, raw: Any, path: str, store: str) -> Field:
    if not isinstance(raw, Mapping):
        raise r.fail(path, "must be a table")
    r.name(name, path)
    if name in ADDED_FIELDS:
        raise r.fail(path, f"{name!r} is added by the generator; choose another name")
    r.only(raw, _FIELD_KEYS, path)
    kind = r.text(raw, "type", f"{path}.type", None)
    if kind not in FIELD_TYPES:
        raise r.fail(f"{path}.type", f"must be one of {', '.join(FIELD_TYPES)}, got {kind!r}")
    required = r.boolean(raw, "required", f"{path}.required", True)
    nullable = r.boolean(raw, "nullable", f"{path}.nullable", False)
    if not required and not nullable:
        raise r.fail(f"{path}.required", "= false needs nullable = true")
    lengths = ("max_length", "min_length", "pattern")
    bounds = ("minimum", "maximum")
    for key in lengths if kind != "str" else ():
        if key in raw:
            raise r.fail(f"{path}.{key}", f"is only for str fields, not {kind}")
    for key in bounds if kind not in ("int", "float") else ():
        if key in raw:
            raise r.fail(f"{path}.{key}", f"is only for int and float fields, not {kind}")
    max_length = r.integer(raw, "max_length", f"{path}.max_length", 1, LIMITS["max_length"])
    min_length = r.integer(raw, "min_length", f"{path}.min_length", 0, LIMITS["max_length"])
    if max_length is not None and min_length is not None and min_length > max_length:
        raise r.fail(f"{path}.min_length", f"({min_length}) is more than max_length ({max_length})")
    pattern = None
    if "pattern" in raw:
        pattern = r.text(raw, "pattern", f"{path}.pattern", None)
        if len(pattern) > LIMITS["pattern"]:
            raise r.fail(f"{path}.pattern", f"must be at most {LIMITS['pattern']} characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise r.fail(f"{path}.pattern", f"is not a valid regular expression ({exc})") from None
    minimum = r.number(raw, "minimum", f"{path}.minimum")
    maximum = r.number(raw, "maximum", f"{path}.maximum")
    if minimum is not None and maximum is not None and minimum > maximum:
        raise r.fail(f"{path}.minimum", f"({minimum:g}) is more than maximum ({maximum:g})")
    if kind == "int":
        for key, value in (("minimum", minimum), ("maximum", maximum)):
            if value is not None and not value.is_integer():
                raise r.fail(f"{path}.{key}", "must be an integer for an int field")
    references = None
    if "references" in raw:
        references = r.name(raw["references"], f"{path}.references", LIMITS["entity_name"])
    unique = r.boolean(raw, "unique", f"{path}.unique", False)
    field = Field(
        name=name,
        type=kind,
        required=required,
        nullable=nullable,
        max_length=max_length,
        min_length=min_length,
        pattern=pattern,
        minimum=minimum,
        maximum=maximum,
        unique=unique,
        references=references,
        example=raw.get("example"),
        description=r.text(raw, "description", f"{path}.description", ""),
    )
    if unique:
        _check_indexable(r, field, store, f"{path}.unique")
    _check_example(r, field, path)
    return field


def _check_indexable(r: _Reader, field: Field, store: str, path: str) -> None:
    """A field REL indexes must be a bounded VARCHAR (not TEXT) and not JSON."""
    if field.type == "json":
        raise r.fail(path, f"cannot use json field {field.name!r} (it cannot be indexed)")
    if store == "rel" and field.type == "str" and (field.max_length or 10**9) > _INDEXED_STR:
        raise r.fail(
            path,
            f"needs str field {field.name!r} to declare max_length of at most {_INDEXED_STR}"
            " (an index cannot hold longer text)",
        )


def _check_example(r: _Reader, field: Field, path: str) -> None:
    """An ``example`` must be valid, and a ``pattern`` needs one (tests and docs use it)."""
    from beds.generator.values import example_problem, example_value

    if field.example is not None:
        problem = example_problem(field, field.example)
        if problem:
            raise r.fail(f"{path}.example", problem)
    elif example_value(field) is None:
        raise r.fail(
            f"{path}.example",
            "is required: no simple value fits the field's constraints (pattern, lengths,"
            " bounds); give one that does",
        )


def _complete_fields(
    r: _Reader,
    declared: list[Field],
    store: str,
    capabilities: Capabilities,
    explicit_key: bool,
    path: str,
) -> tuple[Field, ...]:
    """Declared fields plus the generator's: ``id``, ``created_at``, REL's ``updated_at``."""
    fields: list[Field] = []
    if not explicit_key:
        kind = "int" if store == "rel" else "str"
        fields.append(
            Field(name="id", type=kind, generated=True, description="Assigned by the store.")
        )
    for field in declared:
        if capabilities.locking and field.name == capabilities.version_field:
            if field.type != "int" or field.nullable:
                raise r.fail(
                    f"{path}.fields.{field.name}.type",
                    "must be int (not nullable): it is the locking version field",
                )
            field = Field(
                name=field.name,
                type="int",
                generated=True,
                description=field.description or "Starts at 1; every update adds 1.",
            )
        fields.append(field)
    fields.append(
        Field(
            name="created_at",
            type="datetime",
            generated=True,
            description="When it was created (UTC).",
        )
    )
    if store == "rel":
        fields.append(
            Field(
                name="updated_at",
                type="datetime",
                generated=True,
                nullable=True,
                required=False,
                description="When it last changed (UTC); null until then.",
            )
        )
    return tuple(fields)


def _capabilities(r: _Reader, raw: Mapping[str, Any], path: str) -> Capabilities:
    path = f"{path}.capabilities"
    r.only(
        raw,
        ("audit", "journal", "locking", "version_field", "cache", "cache_ttl", "retention_days"),
        path,
    )
    locking = r.boolean(raw, "locking", f"{path}.locking", False)
    version_field = "version"
    if "version_field" in raw:
        version_field = r.name(raw["version_field"], f"{path}.version_field")
        if not locking:
            raise r.fail(f"{path}.version_field", "is set without locking = true")
    cache = r.boolean(raw, "cache", f"{path}.cache", False)
    ttl = r.integer(raw, "cache_ttl", f"{path}.cache_ttl", 1, 86_400)
    if ttl is not None and not cache:
        raise r.fail(f"{path}.cache_ttl", "is set without cache = true")
    return Capabilities(
        audit=r.boolean(raw, "audit", f"{path}.audit", False),
        journal=r.boolean(raw, "journal", f"{path}.journal", False),
        locking=locking,
        version_field=version_field,
        cache=cache,
        cache_ttl=ttl,
        retention_days=r.integer(raw, "retention_days", f"{path}.retention_days", 1, 36_500),
    )


def _check_capabilities(r: _Reader, entity: Entity, path: str) -> None:
    caps = entity.capabilities
    changeable = [
        f
        for f in entity.fields
        if not f.generated and f.name not in entity.key and f.name != entity.access.owner
    ]
    if "update" in entity.operations and not changeable:
        raise r.fail(
            f"{path}.operations",
            "lists update, but no field can change (besides the key and the owner): declare"
            ' one, or operations = ["create", "delete"]',
        )
    names = {f.name for f in entity.fields}
    if caps.locking and caps.version_field not in names:
        raise r.fail(
            f"{path}.capabilities.locking",
            f"needs a version field: declare fields.{caps.version_field} (type int)",
        )
    if caps.locking and "update" not in entity.operations and "delete" not in entity.operations:
        raise r.fail(f"{path}.capabilities.locking", "needs an update or delete operation")


def _queries(r: _Reader, raw: Mapping[str, Any], entity: Entity, path: str) -> tuple[Query, ...]:
    if len(raw) > LIMITS["queries"]:
        raise r.fail(f"{path}.queries", f"must declare at most {LIMITS['queries']} queries")
    fields = {f.name: f for f in entity.fields}
    queries: list[Query] = []
    for name, table in raw.items():
        qpath = f"{path}.queries.{name}"
        if not isinstance(table, Mapping):
            raise r.fail(qpath, "must be a table")
        r.name(name, qpath)
        if name == "by_key":
            raise r.fail(qpath, "'by_key' is the key query the generator adds; choose another name")
        r.only(table, ("by", "where", "order_by", "page_size", "principal", "description"), qpath)
        by = r.names(table, "by", f"{qpath}.by", 8)
        for i, field_name in enumerate(by):
            if field_name not in fields:
                raise r.fail(f"{qpath}.by[{i}]", f"names {field_name!r}, which is not a field")
            _check_indexable(r, fields[field_name], entity.store, f"{qpath}.by[{i}]")
        where: list[Where] = []
        raw_where = r.table(table, "where", f"{qpath}.where")
        if len(raw_where) > 8:
            raise r.fail(f"{qpath}.where", "must declare at most 8 conditions")
        for param, cond in raw_where.items():
            wpath = f"{qpath}.where.{param}"
            r.name(param, wpath)
            if param in fields:
                raise r.fail(
                    wpath, f"{param!r} is a field name; name the param after its bound (since)"
                )
            if not isinstance(cond, Mapping):
                raise r.fail(wpath, "must be a table { field = ..., op = ... }")
            r.only(cond, ("field", "op"), wpath)
            target = r.text(cond, "field", f"{wpath}.field", None)
            if target not in fields:
                raise r.fail(f"{wpath}.field", f"names {target!r}, which is not a field")
            op = r.text(cond, "op", f"{wpath}.op", None)
            if op not in WHERE_OPS:
                raise r.fail(f"{wpath}.op", f"must be one of {', '.join(WHERE_OPS)}")
            if op not in ("eq", "in") and fields[target].type not in _RANGE_TYPES:
                raise r.fail(f"{wpath}.op", f"{op!r} needs a str, int, float or datetime field")
            _check_indexable(r, fields[target], entity.store, f"{wpath}.field")
            where.append(Where(param=param, field=target, op=op))
        order_by = _order(r, table, f"{qpath}.order_by")
        for i, item in enumerate(order_by):
            field_name = item.lstrip("-")
            field = fields.get(field_name)
            if field is None:
                raise r.fail(
                    f"{qpath}.order_by[{i}]", f"names {field_name!r}, which is not a field"
                )
            if field.nullable or field.type not in _RANGE_TYPES:
                raise r.fail(
                    f"{qpath}.order_by[{i}]",
                    f"names {field_name!r}: a cursor needs a field that is never null and"
                    " whose values compare (str, int, float, datetime)",
                )
            _check_indexable(r, field, entity.store, f"{qpath}.order_by[{i}]")
        if order_by:
            # A total order, so the query pages with cursors: the key ends it, same direction.
            direction = "-" if order_by[-1].startswith("-") else ""
            present = {o.lstrip("-") for o in order_by}
            order_by = (*order_by, *(direction + k for k in entity.key if k not in present))
        page_size = r.integer(table, "page_size", f"{qpath}.page_size", 1, LIMITS["page_size"])
        principal = None
        if "principal" in table:
            principal = r.text(table, "principal", f"{qpath}.principal", None)
            if principal not in by or fields[principal].type != "str":
                raise r.fail(f"{qpath}.principal", "must name a str field listed in by")
        queries.append(
            Query(
                name=name,
                by=by,
                where=tuple(where),
                order_by=order_by,
                page_size=page_size or 50,
                principal=principal,
                description=r.text(table, "description", f"{qpath}.description", ""),
            )
        )
    return tuple(queries)


def _order(r: _Reader, table: Mapping[str, Any], path: str) -> tuple[str, ...]:
    """``order_by``: field names, ``-name`` for descending."""
    value = table.get("order_by", [])
    if not isinstance(value, list) or len(value) > 4:
        raise r.fail(path, "must be a list of at most 4 field names (-name: descending)")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise r.fail(f"{path}[{i}]", "must be a string")
        r.name(item.removeprefix("-"), f"{path}[{i}]")
        out.append(item)
    if len({o.lstrip("-") for o in out}) != len(out):
        raise r.fail(path, "lists a field twice")
    return tuple(out)


def _access(
    r: _Reader, raw: Mapping[str, Any], entity: Entity, path: str, long_operations: bool
) -> Access:
    path = f"{path}.access"
    if not raw:
        # No rules: a node in production refuses templates open to anonymous writes, so the
        # generator's default is the safe one: authenticated writers, anyone reads.
        signed_in = ("authenticated",)
        return Access(
            create=signed_in,
            update=signed_in,
            delete=signed_in,
            fetch=("*",),
            submit=signed_in if long_operations else None,
        )
    r.only(raw, (*ACCESS_KEYS, "owner"), path)
    rules: dict[str, tuple[str, ...] | None] = {}
    for key in ACCESS_KEYS:
        if key not in raw:
            rules[key] = None
            continue
        value = raw[key]
        if not isinstance(value, list) or not value or len(value) > LIMITS["roles"]:
            raise r.fail(f"{path}.{key}", f"must be a list of 1 to {LIMITS['roles']} roles")
        for i, role in enumerate(value):
            if not isinstance(role, str) or not (
                role in ("*", "authenticated") or _ROLE.fullmatch(role)
            ):
                raise r.fail(f"{path}.{key}[{i}]", "must be a role name, 'authenticated' or '*'")
        rules[key] = tuple(value)
    owner = None
    if "owner" in raw:
        owner = r.text(raw, "owner", f"{path}.owner", None)
        fields = {f.name: f for f in entity.fields}
        field = fields.get(owner)
        if field is None or field.type != "str" or field.generated or field.nullable:
            raise r.fail(f"{path}.owner", "must name a str field that is not generated or nullable")
    if rules["submit"] is not None and not raw.get("submit"):
        raise r.fail(f"{path}.submit", "must list roles")
    return Access(owner=owner, **rules)


def _long_operations(
    r: _Reader, raw: Mapping[str, Any], entity: Entity, path: str
) -> tuple[LongOperation, ...]:
    if len(raw) > LIMITS["long_operations"]:
        raise r.fail(f"{path}.long_operations", f"must declare at most {LIMITS['long_operations']}")
    fields = {f.name: f for f in entity.fields}
    operations: list[LongOperation] = []
    for name, table in raw.items():
        lpath = f"{path}.long_operations.{name}"
        if not isinstance(table, Mapping):
            raise r.fail(lpath, "must be a table")
        r.name(name, lpath, 24)
        r.only(table, ("count_by", "steps", "description"), lpath)
        count_by = r.text(table, "count_by", f"{lpath}.count_by", None)
        field = fields.get(count_by)
        if field is None:
            raise r.fail(f"{lpath}.count_by", f"names {count_by!r}, which is not a field")
        _check_indexable(r, field, entity.store, f"{lpath}.count_by")
        if field.type not in ("str", "int", "bool"):
            raise r.fail(f"{lpath}.count_by", "must name a str, int or bool field")
        steps = r.integer(table, "steps", f"{lpath}.steps", 1, LIMITS["steps"]) or 1
        operations.append(
            LongOperation(
                name=name,
                count_by=count_by,
                steps=steps,
                description=r.text(table, "description", f"{lpath}.description", ""),
            )
        )
    return tuple(operations)


def _check_domain(r: _Reader, domain: Domain) -> None:
    """Rules across entities: TLAs, references, object-name lengths."""
    seen: dict[str, str] = {}
    names = {e.name for e in domain.entities}
    for entity in domain.entities:
        path = f"entities.{entity.name}"
        if entity.tla in seen:
            raise r.fail(f"{path}.tla", f"{entity.tla!r} is also the TLA of {seen[entity.tla]!r}")
        seen[entity.tla] = entity.name
        for field in entity.fields:
            if field.references is None:
                continue
            fpath = f"{path}.fields.{field.name}.references"
            if field.references not in names:
                raise r.fail(fpath, f"names {field.references!r}, which is not an entity")
            target = domain.entity(field.references)
            if len(target.key) != 1:
                raise r.fail(fpath, f"names {target.name!r}, whose key has several fields")
            key_field = target.field(target.key[0])
            if key_field.type != field.type:
                raise r.fail(
                    fpath,
                    f"must have the type of {target.name}.{key_field.name} ({key_field.type}),"
                    f" not {field.type}",
                )
            _check_indexable(r, field, entity.store, fpath)


def check_installed(domain: Domain, installed: Iterable[tuple[str, str, str]]) -> None:
    """Refuse template names and TLAs that installed templates of other packages use.

    ``installed`` holds ``(template, tla, distribution)``; the domain's own distribution (a
    package generated before and installed) is not a clash.

    Raises:
        DescriptionError: naming ``entities.<name>.tla`` (or the entity), and the other package.
    """
    for template, tla, distribution in installed:
        if distribution == domain.distribution:
            continue
        for entity in domain.entities:
            path = f"entities.{entity.name}"
            if domain.template_name(entity) == template:
                raise DescriptionError(
                    f"becomes template {template!r}, which {distribution} already installs",
                    key=path,
                )
            if entity.tla == tla:
                raise DescriptionError(
                    f"{tla!r} is the TLA of template {template!r} of {distribution}, installed"
                    " here: database objects would clash; choose another",
                    key=f"{path}.tla",
                )
