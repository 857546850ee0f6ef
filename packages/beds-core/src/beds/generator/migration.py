"""The next schema migration: what changed between the lock's description and the new one.

REL gets one file, ``NNN_changes.sql``: new entities whole; for a changed one ``ALTER TABLE``
(``ADD``/``MODIFY``/``DROP COLUMN``), dropped and created indexes, and its view and routines
again (``CREATE OR REPLACE``); routines no longer declared are dropped. A removed entity's view
and routines are dropped, its table is left to the DBA (a commented ``DROP TABLE``): data is
never dropped by a generated file without a person deciding. REC gets one file per new or
changed collection (``NNN_<entity>.json``), which ``beds schema apply`` applies over the old
one (validator by ``collMod``, indexes by name). Numbers continue after the lock's files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.generator import rec, rel
from beds.generator.description import DescriptionError
from beds.generator.model import from_snapshot
from beds.generator.shape import table, view

if TYPE_CHECKING:
    from beds.generator.model import Domain, Entity

__all__ = ("migration", "previous_domain")


def previous_domain(lock: dict[str, Any]) -> Domain:
    """The description a lock holds.

    Raises:
        DescriptionError: the lock is not one this generator wrote.
    """
    try:
        if lock.get("format") != 1 or not isinstance(lock.get("schema"), dict):
            raise ValueError("unknown format")
        return from_snapshot(lock["description"])
    except Exception as exc:
        raise DescriptionError(
            f"is not a lock file this generator wrote ({type(exc).__name__})",
            file="beds-domain.lock.json",
        ) from None


def _refuse_incompatible(old: Domain, new: Domain) -> None:
    if old.name != new.name:
        raise DescriptionError(
            f"changed from {old.name!r}: a renamed domain is a new package (use another --out)",
            key="domain.name",
        )
    for entity in new.entities:
        before = next((e for e in old.entities if e.name == entity.name), None)
        if before is None:
            continue
        for attr in ("store", "tla", "key"):
            if getattr(before, attr) != getattr(entity, attr):
                raise DescriptionError(
                    f"changed ({getattr(before, attr)!r} -> {getattr(entity, attr)!r}): the"
                    " records in the store keep the old one; declare a new entity instead",
                    key=f"entities.{entity.name}.{attr}",
                )


def _alter(old: Entity, new: Entity) -> list[str]:
    statements: list[str] = []
    name = table(new)
    old_columns = {f.name: rel._column(old, f) for f in old.fields}
    new_columns = {f.name: rel._column(new, f) for f in new.fields}
    for column, definition in new_columns.items():
        if column not in old_columns:
            statements.append(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS {definition};")
        elif old_columns[column] != definition:
            statements.append(f"ALTER TABLE {name} MODIFY COLUMN {definition};")
    for column in old_columns:
        if column not in new_columns:
            statements.append(f"ALTER TABLE {name} DROP COLUMN IF EXISTS {column};")
    old_indexes = {i[0]: i for i in rel.indexes(old)}
    new_indexes = {i[0]: i for i in rel.indexes(new)}
    for index, spec in old_indexes.items():
        if new_indexes.get(index) != spec:
            statements.append(f"DROP INDEX IF EXISTS {index} ON {name};")
    for index, (_, columns, unique) in new_indexes.items():
        if old_indexes.get(index) != new_indexes[index]:
            kind = "UNIQUE INDEX" if unique else "INDEX"
            statements.append(
                f"CREATE {kind} IF NOT EXISTS {index} ON {name} ({', '.join(columns)});"
            )
    return statements


def _rel_changes(old: Domain, new: Domain) -> str:
    parts: list[str] = []
    routines: list[str] = []
    dropped: list[str] = []
    for entity in new.entities:
        before = next((e for e in old.entities if e.name == entity.name), None)
        if before is None:
            if entity.store == "rel":
                parts += [f"-- New entity {entity.name!r}.", rel.create_table(entity)]
                parts.append(rel.create_view(entity))
                routines += rel.routines(new, entity).values()
            continue
        if entity.store != "rel" or rel.entity_sql(old, before) == rel.entity_sql(new, entity):
            continue
        parts.append(f"-- Entity {entity.name!r} changed.")
        parts += _alter(before, entity)
        parts.append(rel.create_view(entity))
        now = rel.routines(new, entity)
        routines += now.values()
        dropped += [r for r in rel.routines(old, before) if r not in now]
    for entity in old.entities:
        if entity.store != "rel" or any(e.name == entity.name for e in new.entities):
            continue
        parts.append(
            f"-- Entity {entity.name!r} removed. Its table keeps the data; drop it when sure:\n"
            f"-- DROP TABLE IF EXISTS {table(entity)};"
        )
        parts.append(f"DROP VIEW IF EXISTS {view(entity)};")
        dropped += list(rel.routines(old, entity))
    parts += [f"DROP PROCEDURE IF EXISTS {name};" for name in dropped]
    if not parts and not routines:
        return ""
    head = (
        f"-- Migration of the {new.name} domain, generated by `beds new-domain` from a changed\n"
        "-- description. Review it before applying (`beds schema migrate`); never edit it once\n"
        "-- shipped: a later change gets the next number.\n"
    )
    body = "\n".join([head, *parts, ""])
    if routines:
        body += "\nDELIMITER $$\n\n" + "\n".join(routines) + "\nDELIMITER ;\n"
    return body


def migration(lock: dict[str, Any], new: Domain) -> dict[str, bytes]:
    """The new migration files (``schema/<store>/NNN_name``), empty when nothing changed.

    Raises:
        DescriptionError: the change cannot be migrated (renamed domain; changed store, TLA
            or key of an entity).
    """
    old = previous_domain(lock)
    _refuse_incompatible(old, new)
    shipped = {store: list(names) for store, names in lock["schema"].items()}
    out: dict[str, bytes] = {}

    def number(store: str) -> int:
        names = shipped.setdefault(store, [])
        numbers = [int(n.split("_", 1)[0]) for n in names if n[:3].isdigit()]
        return max(numbers, default=0) + 1

    sql = _rel_changes(old, new)
    if sql:
        out[f"schema/rel/{number('rel'):03d}_changes.sql"] = sql.encode()
    next_rec = number("rec")
    for entity in new.entities:
        if entity.store != "rec":
            continue
        before = next((e for e in old.entities if e.name == entity.name), None)
        if before is not None and rec.collection_json(before) == rec.collection_json(entity):
            continue
        out[f"schema/rec/{next_rec:03d}_{entity.name}.json"] = rec.collection_json(entity)
        next_rec += 1
    return out
