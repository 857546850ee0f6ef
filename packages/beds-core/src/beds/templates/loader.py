"""Parse template declarations (TOML) into :class:`~beds.templates.model.Template` objects.

Every problem is reported as a :class:`~beds.errors.TemplateError` naming the source and the key
path, for example ``spew_post.toml: fields.body.max_length must be a positive integer``.

Why this module is long: every key a template may declare is read and checked here, with the
rules that tie them together (key queries for audit and owners, generated fields, the default
query), so that one reading shows what a declaration may say.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from beds.config.stores import DATABASE_NAME
from beds.envelopes import Operation
from beds.templates.batch import parse_batch
from beds.templates.capabilities import parse_capabilities
from beds.templates.long_operations import parse_long_operations
from beds.templates.model import (
    AccessRules,
    FieldSpec,
    FieldType,
    OperationSpec,
    Template,
)
from beds.templates.queries import parse_queries
from beds.templates.reader import Reader, binding, check_fields, principal_param
from beds.templates.retention import RETENTION, parse_retention, retention_operation

__all__ = ("parse_template",)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TLA = re.compile(r"^[a-z]{3}$")
_TOP_KEYS = frozenset(
    {
        "name",
        "store",
        "database",
        "tla",
        "description",
        "version",
        "key",
        "fields",
        "operations",
        "queries",
        "default_query",
        "capabilities",
        "access",
        "long_operations",
        "retention",
        "batch",
    }
)
_FIELD_KEYS = frozenset(
    {
        "type",
        "required",
        "nullable",
        "generated",
        "max_length",
        "min_length",
        "pattern",
        "minimum",
        "maximum",
        "description",
        "secret",
    }
)
_WRITE_OPERATIONS = (Operation.CREATE, Operation.UPDATE, Operation.DELETE)
_ACCESS_OPERATIONS = frozenset({*_WRITE_OPERATIONS, Operation.FETCH, Operation.SUBMIT})


def _parse_field(r: Reader, name: str, raw: Any, path: str = "") -> FieldSpec:
    path = path or f"fields.{name}"
    if not isinstance(raw, Mapping):
        raise r.fail(path, "must be a table")
    if not _NAME.fullmatch(name):
        raise r.fail(path, "name must be lower_snake_case")
    unknown = sorted(set(raw) - _FIELD_KEYS)
    if unknown:
        raise r.fail(f"{path}.{unknown[0]}", "is not a field option")
    type_name = r.string(raw, "type", f"{path}.type")
    try:
        field_type = FieldType(type_name)
    except ValueError:
        choices = ", ".join(t.value for t in FieldType)
        raise r.fail(f"{path}.type", f"must be one of {choices}, got {type_name!r}") from None
    pattern_text = raw.get("pattern")
    pattern = None
    if pattern_text is not None:
        try:
            pattern = re.compile(r.string(raw, "pattern", f"{path}.pattern"))
        except re.error as exc:
            raise r.fail(f"{path}.pattern", f"is not a valid regular expression ({exc})") from exc
    required = r.boolean(raw, "required", f"{path}.required", True)
    nullable = r.boolean(raw, "nullable", f"{path}.nullable", False)
    if not required and not nullable:
        raise r.fail(
            f"{path}.required", "= false needs nullable = true: an omitted value is sent as null"
        )
    return FieldSpec(
        name=name,
        type=field_type,
        required=required,
        nullable=nullable,
        generated=r.boolean(raw, "generated", f"{path}.generated", False),
        max_length=r.positive(raw, "max_length", f"{path}.max_length"),
        min_length=r.positive(raw, "min_length", f"{path}.min_length"),
        pattern=pattern,
        minimum=r.number(raw, "minimum", f"{path}.minimum"),
        maximum=r.number(raw, "maximum", f"{path}.maximum"),
        description=r.string(raw, "description", f"{path}.description", ""),
        secret=r.boolean(raw, "secret", f"{path}.secret", False),
    )


def parse_template(text: str, *, source: str, distribution: str = "") -> Template:
    """Parse one template declaration.

    Args:
        text: the TOML document.
        source: where it came from, used in error messages.
        distribution: the installed distribution that ships it.

    Raises:
        TemplateError: the declaration is invalid; the message names ``source`` and the key path.
    """
    r = Reader(source, source)
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise r.fail("document", f"is not valid TOML ({exc})") from exc
    name = r.string(data, "name", "name")
    if not _NAME.fullmatch(name):
        raise r.fail("name", f"must be lower_snake_case (at most 63 characters), got {name!r}")
    r.template = name
    store = r.string(data, "store", "store")
    if not _NAME.fullmatch(store):
        raise r.fail("store", f"must be a store name such as 'rec' or 'rel', got {store!r}")
    unknown = sorted(set(data) - _TOP_KEYS - {store})
    if unknown:
        raise r.fail(
            unknown[0], "is not a template key (store options go in the [" + store + "] table)"
        )
    database = r.string(data, "database", "database", "")
    if database and not DATABASE_NAME.fullmatch(database):
        raise r.fail(
            "database",
            "must name one of the store's databases ([stores.<store>.databases.<name>]: a "
            f"letter or _, then letters, digits or _; at most 64 characters), got {database!r}",
        )
    tla = r.string(data, "tla", "tla")
    if not _TLA.fullmatch(tla):
        raise r.fail("tla", f"must be three lower-case letters, got {tla!r}")

    raw_fields = r.table(data, "fields", "fields")
    if not raw_fields:
        raise r.fail("fields", "must declare at least one field")
    fields = {field: _parse_field(r, field, raw) for field, raw in raw_fields.items()}
    key = r.names(data, "key", "key")
    if not key:
        raise r.fail("key", "must name at least one field")
    check_fields(r, key, fields, "key")

    operations: dict[Operation, OperationSpec] = {}
    raw_ops = r.table(data, "operations", "operations")
    for op_name, raw in raw_ops.items():
        path = f"operations.{op_name}"
        if op_name not in {op.value for op in _WRITE_OPERATIONS}:
            raise r.fail(
                path, "is not a write operation (create, update, delete); fetches go in [queries]"
            )
        if not isinstance(raw, Mapping):
            raise r.fail(path, "must be a table")
        params = r.names(raw, "params", f"{path}.params")
        returns = r.names(raw, "returns", f"{path}.returns")
        check_fields(r, params, fields, f"{path}.params")
        check_fields(r, returns, fields, f"{path}.returns")
        operation = Operation(op_name)
        if operation is Operation.CREATE:
            generated = [p for p in params if fields[p].generated]
            if generated:
                raise r.fail(f"{path}.params", f"names generated field {generated[0]!r}")
        elif not set(key) <= set(params):
            raise r.fail(f"{path}.params", f"must include the key fields {list(key)}")
        operations[operation] = OperationSpec(
            operation=operation,
            params=params,
            returns=returns,
            principal=principal_param(r, raw, params, fields, path),
            binding=binding(raw, frozenset({"params", "returns", "description", "principal"})),
        )

    queries = parse_queries(r, r.table(data, "queries", "queries"), fields, key)
    public = [name for name, spec in queries.items() if not spec.internal]
    default_query = data.get("default_query", next(iter(public), None))
    if default_query is not None and (
        not isinstance(default_query, str) or default_query not in queries
    ):
        raise r.fail("default_query", f"names {default_query!r}, which is not a declared query")
    if default_query is not None and queries[default_query].internal:
        raise r.fail("default_query", f"names {default_query!r}, which is internal")

    capabilities = parse_capabilities(
        r, r.table(data, "capabilities", "capabilities"), fields, key, operations, queries
    )
    long_operations = parse_long_operations(
        r, r.table(data, "long_operations", "long_operations"), _parse_field
    )
    retention = parse_retention(
        r, r.table(data, "retention", "retention"), capabilities, fields, long_operations
    )
    if retention is not None:  # the sweep runs as a long operation (beds.templates.retention)
        long_operations[RETENTION] = retention_operation(retention)

    rules: dict[Operation, frozenset[str]] = {}
    access = dict(r.table(data, "access", "access"))
    owner = access.pop("owner", None)
    admin_role = access.pop("admin_role", "admin")
    origins = frozenset(r.names(access, "origins", "access.origins"))
    access.pop("origins", None)
    if not all(origins):
        raise r.fail("access.origins", "must name AMQP users (no empty names)")
    for op_name, raw in access.items():
        if op_name not in {op.value for op in _ACCESS_OPERATIONS}:
            raise r.fail(
                f"access.{op_name}",
                "is not an operation (create, fetch, update, delete, submit), owner, admin_role "
                "or origins",
            )
        rules[Operation(op_name)] = frozenset(r.names({op_name: raw}, op_name, f"access.{op_name}"))
    if owner is not None:
        spec = fields.get(owner) if isinstance(owner, str) else None
        if spec is None or spec.type is not FieldType.STR or spec.generated:
            raise r.fail("access.owner", "must name a declared str field that is not generated")
        changes = {Operation.UPDATE, Operation.DELETE} & set(operations)
        if changes and not any(set(q.params) == set(key) for q in queries.values()):
            raise r.fail(
                "access.owner",
                f"needs a query whose params are exactly the key {list(key)} (to read a "
                "record's owner before it is changed)",
            )
    if not isinstance(admin_role, str) or not admin_role:
        raise r.fail("access.admin_role", "must be a role name")

    batch = parse_batch(r, r.table(data, "batch", "batch"), operations)

    version = data.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise r.fail("version", "must be a positive integer")
    return Template(
        name=name,
        store=store,
        database=database,
        tla=tla,
        description=r.string(data, "description", "description", ""),
        version=version,
        fields=fields,
        key=key,
        operations=operations,
        queries=queries,
        default_query=default_query,
        long_operations=long_operations,
        retention=retention,
        capabilities=capabilities,
        access=AccessRules(rules=rules, owner=owner, admin_role=admin_role, origins=origins),
        batch=batch,
        store_options=dict(r.table(data, store, store)),
        source=source,
        distribution=distribution,
    )
