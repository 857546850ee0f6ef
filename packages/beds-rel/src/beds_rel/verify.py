"""Check, through ``information_schema``, that a template's declared objects exist and fit.

Routines must exist with the declared kind and take as many parameters as the adapter passes
(a query procedure's limit and its OUT parameters included), a procedure each in the mode the
template declares (``IN``, ``INOUT`` or ``OUT``: an OUT value read from an ``IN`` parameter
would silently be null); views must exist and expose every column a query selects, compares or
orders by.
Routine names compare case-insensitively, as MariaDB does; view names compare exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from asyncmy.connection import Connection
    from asyncmy.cursors import Cursor

    from beds_rel.bindings import Call

__all__ = ("missing_objects",)

_ROUTINES = """
SELECT r.ROUTINE_TYPE, r.ROUTINE_NAME,
       (SELECT COUNT(*) FROM information_schema.PARAMETERS p
         WHERE p.SPECIFIC_SCHEMA = r.ROUTINE_SCHEMA AND p.SPECIFIC_NAME = r.ROUTINE_NAME
           AND p.ROUTINE_TYPE = r.ROUTINE_TYPE AND p.ORDINAL_POSITION > 0) AS arity,
       (SELECT GROUP_CONCAT(COALESCE(p.PARAMETER_MODE, '') ORDER BY p.ORDINAL_POSITION)
          FROM information_schema.PARAMETERS p
         WHERE p.SPECIFIC_SCHEMA = r.ROUTINE_SCHEMA AND p.SPECIFIC_NAME = r.ROUTINE_NAME
           AND p.ROUTINE_TYPE = r.ROUTINE_TYPE AND p.ORDINAL_POSITION > 0) AS modes
  FROM information_schema.ROUTINES r
 WHERE r.ROUTINE_SCHEMA = DATABASE() AND r.ROUTINE_NAME IN ({names})
"""
# Two single-table look-ups rather than VIEWS joined to COLUMNS: MariaDB 10.11 was seen to crash
# (signal 11, freeing the join's temporary table) on that join under concurrent DDL, and
# information_schema.VIEWS materialises every view's definition for nothing.
_VIEWS = """
SELECT TABLE_NAME FROM information_schema.TABLES
 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'VIEW' AND TABLE_NAME IN ({names})
"""
_COLUMNS = """
SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS
 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ({names})
"""


async def _select(cursor: Cursor, sql: str, names: Sequence[str]) -> list[Any]:
    await cursor.execute(sql.format(names=", ".join(["%s"] * len(names))), tuple(names))
    return list(await cursor.fetchall())


def _mode_problem(call: Call, modes: str | None) -> str | None:
    """How a procedure's parameter modes differ from the call's, or ``None``."""
    found = str(modes or "").upper().split(",")
    for position, (want, have) in enumerate(zip(call.modes, found, strict=False), start=1):
        if want != have:
            return (
                f"{call.name} (parameter {position} is {have or 'not a parameter'}; the template "
                f"passes it as {want})"
            )
    return None


async def missing_objects(conn: Connection, calls: Sequence[Call]) -> list[str]:
    """Return one sorted detail per missing or mismatched object (empty when all fit).

    Raises:
        asyncmy.errors.MySQLError: the look-up failed; the caller maps it.
    """
    routines = [call for call in calls if call.kind != "view"]
    views = [call for call in calls if call.kind == "view"]
    problems: set[str] = set()
    async with conn.cursor() as cursor:
        if routines:
            found = {
                (str(kind).lower(), str(name).lower()): (int(arity), modes)
                for kind, name, arity, modes in await _select(
                    cursor, _ROUTINES, sorted({c.name for c in routines})
                )
            }
            for call in routines:
                routine = found.get((call.kind, call.name.lower()))
                if routine is None:
                    problems.add(call.name)
                    continue
                arity, modes = routine
                if arity != call.arity:
                    problems.add(
                        f"{call.name} (takes {arity} parameters; the template passes {call.arity})"
                    )
                elif (mismatch := _mode_problem(call, modes)) is not None:
                    problems.add(mismatch)
        if views:
            names = sorted({c.name for c in views})
            columns: dict[str, set[str]] = {
                str(view): set() for (view,) in await _select(cursor, _VIEWS, names)
            }
            for view, column in await _select(cursor, _COLUMNS, names):
                if str(view) in columns:
                    columns[str(view)].add(str(column).lower())
            for call in views:
                if call.name not in columns:
                    problems.add(call.name)
                    continue
                problems.update(
                    f"{call.name}.{column}"
                    for column in call.referenced or call.columns
                    if column.lower() not in columns[call.name]
                )
    return sorted(problems)
