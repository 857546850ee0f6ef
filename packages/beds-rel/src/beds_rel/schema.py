"""Apply DBA schema files: split SQL like the ``mysql`` client does, then run each statement.

:func:`split_statements` follows the client's rules: a ``DELIMITER x`` line (outside strings and
comments) ends any pending statement and changes the delimiter, so procedure bodies may hold
``;``; quoted text (``'…'``, ``"…"`` with backslash escapes, `````…`````) is never split;
``-- ``, ``#`` and ``/* … */`` comments are dropped, while ``/*! … */`` and ``/*M! … */``
(executable comments) are kept; a last statement without a delimiter still counts.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import asyncmy
import attrs

from beds.errors import StoreError, StoreUnavailable
from beds_rel.errors import map_exceptions, translate

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.namaste import SchemaFile
    from beds_rel.settings import RelSettings

__all__ = ("Statement", "apply_schema_files", "split_statements")

_DELIMITER_LINE = re.compile(
    r"[ \t]*delimiter(?=[ \t\r\n]|$)[ \t]*(\S*)[^\n]*(?:\n|$)", re.IGNORECASE
)
_QUOTES = frozenset("'\"`")


@attrs.frozen
class Statement:
    """One SQL statement of a schema file and the line it starts on (1-based)."""

    text: str
    line: int


class _Splitter:
    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.delimiter = ";"
        self.statements: list[Statement] = []
        self.buffer: list[str] = []
        self.start: int | None = None
        self.line = 1
        self.pos = 0

    def emit(self) -> None:
        text = "".join(self.buffer).strip()
        if text and self.start is not None:
            self.statements.append(Statement(text, self.start))
        self.buffer.clear()
        self.start = None

    def add(self, text: str) -> None:
        if self.start is None and text.strip():
            self.start = self.line
        self.buffer.append(text)
        self.line += text.count("\n")

    def skip_to(self, end: int) -> int:
        self.line += self.sql.count("\n", self.pos, end)
        return end

    def run(self) -> list[Statement]:
        sql, n = self.sql, len(self.sql)
        line_start = True
        while self.pos < n:
            i = self.pos
            if line_start:
                line_start = False
                match = _DELIMITER_LINE.match(sql, i)
                if match:
                    if not match.group(1) or "\\" in match.group(1):
                        raise ValueError(f"line {self.line}: DELIMITER needs a delimiter")
                    self.emit()
                    self.delimiter = match.group(1)
                    self.pos = self.skip_to(match.end())
                    line_start = True
                    continue
            ch = sql[i]
            if sql.startswith(self.delimiter, i):
                self.emit()
                self.pos = i + len(self.delimiter)
            elif ch in _QUOTES:
                self.pos = self._quoted(i, ch)
            elif ch == "#" or (sql.startswith("--", i) and (i + 2 == n or sql[i + 2] <= " ")):
                end = sql.find("\n", i)
                self.pos = n if end < 0 else end  # the newline itself is kept
            elif sql.startswith("/*", i):
                end = sql.find("*/", i + 2)
                end = n if end < 0 else end + 2
                if sql.startswith(("/*!", "/*M!"), i):
                    self.add(sql[i:end])
                    self.pos = end
                else:
                    self.add(" ")
                    self.pos = self.skip_to(end)
            else:
                self.add(ch)
                self.pos = i + 1
                line_start = ch == "\n"
        self.emit()
        return self.statements

    def _quoted(self, i: int, quote: str) -> int:
        sql, j = self.sql, i + 1
        while j < len(sql):
            if sql[j] == "\\" and quote != "`":
                j += 2
            elif sql[j] == quote:
                j += 1
                break
            else:
                j += 1
        self.add(sql[i:j])
        return min(j, len(sql))


def split_statements(sql: str) -> list[Statement]:
    """Split a schema file into statements, honouring ``DELIMITER`` lines like ``mysql`` does.

    Raises:
        ValueError: a ``DELIMITER`` line without a usable delimiter (the message names the line).
    """
    return _Splitter(sql).run()


async def apply_schema_files(settings: RelSettings, files: Sequence[SchemaFile]) -> list[str]:
    """Create the configured database if needed, then run every statement of each file in order.

    Returns:
        The names of the files applied, in order.

    Raises:
        StoreUnavailable: MariaDB cannot be reached.
        StoreError: a file does not parse or a statement fails; details name the file and line.
    """
    plans = []
    for file in files:
        try:
            plans.append((file, split_statements(file.text)))
        except ValueError as exc:
            raise StoreError(
                "a schema file does not parse", details=(f"{file.name}: {exc}",)
            ) from exc
    with map_exceptions():
        conn = await asyncmy.connect(**settings.connect_kwargs(with_database=False))
    try:
        with map_exceptions():
            async with conn.cursor() as cursor:
                # Notes such as "already exists" are expected when a schema is re-applied.
                await cursor.execute("SET sql_notes = 0")
                await cursor.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{settings.database}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            await conn.select_db(settings.database)
        for file, statements in plans:
            for statement in statements:
                await _run(conn, file, statement)
    finally:
        await conn.ensure_closed()
    return [file.name for file, _ in plans]


async def _run(conn: asyncmy.Connection, file: SchemaFile, statement: Statement) -> None:
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement.text)
    except (asyncmy.errors.MySQLError, OSError) as exc:
        mapped = translate(exc) or StoreError("MariaDB rejected the call")
        if isinstance(mapped, StoreUnavailable):
            raise mapped from exc
        raise StoreError(
            "a schema statement failed",
            details=(f"{file.name}: statement at line {statement.line}", *mapped.details),
        ) from exc
