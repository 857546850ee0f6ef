"""MariaDB objects of a REL entity, by the REL adapter's conventions (docs/rel.md).

One re-appliable file per entity: ``CREATE TABLE IF NOT EXISTS``, ``CREATE OR REPLACE`` view
and routines. Write procedures take the operation's params in the template's order; the update
keeps a column whose argument is NULL (the adapter passes NULL for params not sent); locked
entities check the version in the write's own statement and ``SIGNAL SQLSTATE '45409'`` when a
row with the key exists at another version; the view exposes every column, so every query pages
on it. Nothing here COMMITs, so journaled writes stay in the adapter's transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds.generator.shape import (
    create_params,
    create_returns,
    delete_params,
    index_name,
    procedure,
    queries,
    table,
    update_params,
    update_returns,
    view,
)

if TYPE_CHECKING:
    from beds.generator.model import Domain, Entity, Field

__all__ = ("column_type", "entity_sql", "indexes", "param_type")

_TEXT = " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
_INDEX_CHARS = 768  # InnoDB's 3072-byte index key, at 4 bytes per utf8mb4 character
_TABLE_OPTIONS = "ENGINE = InnoDB DEFAULT CHARACTER SET = utf8mb4 COLLATE = utf8mb4_unicode_ci"


def column_type(field: Field) -> str:
    """The column type of ``field``."""
    if field.type == "str":
        length = field.max_length
        if length is not None and length <= 255:
            return f"VARCHAR({length})"
        if length is not None and length <= 16_383:
            return "TEXT"
        if length is not None and length <= 4_194_303:
            return "MEDIUMTEXT"
        return "LONGTEXT"
    return {
        "int": "BIGINT",
        "float": "DOUBLE",
        "bool": "BOOLEAN",
        "datetime": "DATETIME(6)",
        "decimal": "DECIMAL(20, 2)",
        "json": "JSON",
    }[field.type]


def param_type(field: Field) -> str:
    """The routine parameter type of ``field`` (text in the table's character set)."""
    kind = column_type(field)
    if field.type == "str":
        return kind + _TEXT
    if field.type == "json":
        return "LONGTEXT" + _TEXT
    return kind


def _column(entity: Entity, field: Field) -> str:
    kind = column_type(field)
    if field.name == "id" and field.generated:
        return f"id {kind} NOT NULL AUTO_INCREMENT"
    if field.name == "created_at" and field.generated:
        return f"created_at {kind} NOT NULL DEFAULT UTC_TIMESTAMP(6)"
    if field.name == "updated_at" and field.generated:
        return f"updated_at {kind} NULL DEFAULT NULL"
    if field.generated:  # the locking version: starts at 1
        return f"{field.name} {kind} NOT NULL DEFAULT 1"
    null = "NULL DEFAULT NULL" if field.nullable else "NOT NULL"
    return f"{field.name} {kind} {null}"


def indexes(entity: Entity) -> list[tuple[str, tuple[str, ...], bool]]:
    """``(name, columns, unique)`` of every secondary index, in a fixed order.

    One per query (its equality fields, range fields, then its order), one per unique or
    referencing field, and ``created`` for retention; columns past InnoDB's key size are left
    out (the index still serves their prefix).
    """
    out: list[tuple[str, tuple[str, ...], bool]] = []
    for field in entity.fields:
        if field.unique:
            out.append((index_name(entity, field.name, "uq"), (field.name,), True))
    for field in entity.fields:
        if field.references and not field.unique:
            out.append((index_name(entity, field.name), (field.name,), False))
    for query in queries(entity)[1:]:
        columns = [*query.by, *(w.field for w in query.where)]
        columns += [o.lstrip("-") for o in query.order_by]
        out.append((index_name(entity, query.name), _fit(entity, columns), False))
    if entity.capabilities.retention_days is not None:
        out.append(
            (index_name(entity, "created"), _fit(entity, ["created_at", *entity.key]), False)
        )
    return out


def _fit(entity: Entity, columns: list[str]) -> tuple[str, ...]:
    chars = 0
    kept: list[str] = []
    for name in dict.fromkeys(columns):
        field = entity.field(name)
        width = field.max_length or 0 if field.type == "str" else 2
        if chars + width > _INDEX_CHARS:
            break
        chars += width
        kept.append(name)
    return tuple(kept)


def _where(entity: Entity, keys: tuple[str, ...]) -> str:
    return " AND ".join(f"{k} = p_{k}" for k in keys)


def _params(entity: Entity, names: tuple[str, ...]) -> str:
    parts = [f"IN p_{n} {param_type(entity.field(n))}" for n in names]
    if not parts:
        return "()"
    return "(\n    " + ",\n    ".join(parts) + "\n)"


def _create(entity: Entity) -> str:
    params = create_params(entity)
    name = procedure(entity, "create")
    cols = ", ".join(params)
    values = ", ".join(f"p_{p}" for p in params)
    insert = f"INSERT INTO {table(entity)} ({cols}) VALUES ({values});"
    if entity.key == ("id",) and entity.field("id").generated:
        found = "id = LAST_INSERT_ID()"
    else:
        found = _where(entity, entity.key)
    returns = ", ".join(create_returns(entity))
    return (
        f"CREATE OR REPLACE PROCEDURE {name}{_params(entity, params)}\n"
        "MODIFIES SQL DATA\nBEGIN\n"
        f"    {insert}\n"
        f"    SELECT {returns} FROM {table(entity)} WHERE {found};\n"
        "END$$\n"
    )


def _stale(entity: Entity, domain: Domain, changed: str) -> str:
    """The locking convention: no row changed but one has the key -> SQLSTATE 45409."""
    exists = f"SELECT 1 FROM {table(entity)} WHERE {_where(entity, entity.key)}"
    return (
        f"    IF {changed} = 0 AND EXISTS ({exists}) THEN\n"
        f"        SIGNAL SQLSTATE '45409' SET MESSAGE_TEXT = "
        f"'{domain.template_name(entity)}: stale version';\n"
        "    END IF;\n"
    )


def _update(domain: Domain, entity: Entity) -> str:
    params = update_params(entity)
    caps = entity.capabilities
    version = caps.version_field if caps.locking else None
    sets = [f"{p} = COALESCE(p_{p}, {p})" for p in params if p not in entity.key and p != version]
    if version:
        sets.append(f"{version} = {version} + 1")
    sets.append("updated_at = UTC_TIMESTAMP(6)")
    where = _where(entity, entity.key) + (f" AND {version} = p_{version}" if version else "")
    body = (
        f"    UPDATE {table(entity)}\n       SET " + ",\n           ".join(sets) + "\n"
        f"     WHERE {where};\n"
    )
    if version:
        body += _stale(entity, domain, "ROW_COUNT()")
    returns = ", ".join(update_returns(entity))
    body += f"    SELECT {returns} FROM {table(entity)} WHERE {_where(entity, entity.key)};\n"
    return (
        "-- A NULL argument keeps the current value (the adapter passes NULL for params not\n"
        "-- sent).\n"
        f"CREATE OR REPLACE PROCEDURE {procedure(entity, 'update')}{_params(entity, params)}\n"
        f"MODIFIES SQL DATA\nBEGIN\n{body}END$$\n"
    )


def _delete(domain: Domain, entity: Entity) -> str:
    params = delete_params(entity)
    caps = entity.capabilities
    where = _where(entity, params)
    if caps.locking:
        body = (
            "    DECLARE v_deleted INT DEFAULT 0;\n"
            f"    DELETE FROM {table(entity)} WHERE {where};\n"
            "    SET v_deleted = ROW_COUNT();\n"
            + _stale(entity, domain, "v_deleted")
            + "    SELECT v_deleted AS deleted;\n"
        )
    else:
        body = (
            f"    DELETE FROM {table(entity)} WHERE {where};\n    SELECT ROW_COUNT() AS deleted;\n"
        )
    return (
        f"CREATE OR REPLACE PROCEDURE {procedure(entity, 'delete')}{_params(entity, params)}\n"
        f"MODIFIES SQL DATA\nBEGIN\n{body}END$$\n"
    )


def _retire(entity: Entity) -> str:
    name = procedure(entity, "retire")
    return (
        "-- Retention: deletes at most p_limit rows created before p_before, oldest first, and\n"
        "-- returns no result set once none is left (the sweep then stops).\n"
        f"CREATE OR REPLACE PROCEDURE {name}(\n"
        "    IN p_before DATETIME(6),\n    IN p_limit INT,\n"
        "    IN p_step INT,\n    IN p_steps INT\n)\n"
        "MODIFIES SQL DATA\nBEGIN\n"
        "    DECLARE v_retired INT DEFAULT 0;\n"
        f"    DELETE FROM {table(entity)} WHERE created_at < p_before\n"
        f"     ORDER BY created_at, {', '.join(entity.key)} LIMIT p_limit;\n"
        "    SET v_retired = ROW_COUNT();\n"
        "    IF v_retired > 0 THEN\n        SELECT v_retired AS retired;\n    END IF;\n"
        "END$$\n"
    )


def _long_operation(entity: Entity, name: str, count_by: str) -> str:
    value = f"COALESCE(CAST({count_by} AS CHAR), '')"
    return (
        "-- A long operation: called once per step; each step counts the values whose CRC32\n"
        "-- modulo p_steps is p_step, so the steps together count every value exactly once.\n"
        f"CREATE OR REPLACE PROCEDURE {procedure(entity, name)}(IN p_step INT, IN p_steps INT)\n"
        "READS SQL DATA\nBEGIN\n"
        f"    SELECT {count_by}, COUNT(*) AS records\n"
        f"      FROM {table(entity)}\n"
        f"     WHERE MOD(CRC32({value}), p_steps) = p_step\n"
        f"     GROUP BY {count_by}\n"
        f"     ORDER BY {count_by};\n"
        "END$$\n"
    )


def create_table(entity: Entity) -> str:
    """The ``CREATE TABLE IF NOT EXISTS`` statement."""
    lines = [_column(entity, f) for f in entity.fields]
    lines.append(f"PRIMARY KEY ({', '.join(entity.key)})")
    for name, columns, unique in indexes(entity):
        lines.append(f"{'UNIQUE KEY' if unique else 'KEY'} {name} ({', '.join(columns)})")
    body = ",\n    ".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {table(entity)} (\n    {body}\n) {_TABLE_OPTIONS};\n"


def create_view(entity: Entity) -> str:
    """The view every query of the entity reads."""
    columns = ", ".join(f.name for f in entity.fields)
    return f"CREATE OR REPLACE VIEW {view(entity)} AS\n    SELECT {columns} FROM {table(entity)};\n"


def routines(domain: Domain, entity: Entity) -> dict[str, str]:
    """Each routine's ``CREATE OR REPLACE`` statement (ending ``$$``), by name."""
    out: dict[str, str] = {}
    if "create" in entity.operations:
        out[procedure(entity, "create")] = _create(entity)
    if "update" in entity.operations:
        out[procedure(entity, "update")] = _update(domain, entity)
    if "delete" in entity.operations:
        out[procedure(entity, "delete")] = _delete(domain, entity)
    if entity.capabilities.retention_days is not None:
        out[procedure(entity, "retire")] = _retire(entity)
    for operation in entity.long_operations:
        out[procedure(entity, operation.name)] = _long_operation(
            entity, operation.name, operation.count_by
        )
    return out


def header(domain: Domain, entity: Entity, title: str) -> str:
    """The comment block that opens a schema file."""
    return (
        f"-- {title}: entity {entity.name!r} of the {domain.name} domain (template"
        f" {domain.template_name(entity)}, TLA {entity.tla}), for the BEDS REL store.\n"
        "-- Generated by `beds new-domain`; the DBA reviews it before applying it.\n"
        "-- Conventions (docs/rel.md): write procedures take the operation's params in the\n"
        "-- template's order, update keeps a column whose argument is NULL, delete returns\n"
        "-- `deleted`, DATETIME values are UTC, and nothing here COMMITs (journaled writes run\n"
        "-- in the adapter's transaction).\n"
    )


def entity_sql(domain: Domain, entity: Entity) -> str:
    """The whole re-appliable schema file of a new entity."""
    parts = [
        header(domain, entity, "Schema"),
        "",
        create_table(entity),
        create_view(entity),
        "DELIMITER $$\n",
        *routines(domain, entity).values(),
        "DELIMITER ;\n",
    ]
    return "\n".join(parts)
