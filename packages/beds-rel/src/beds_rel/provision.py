"""REL accounts: one MariaDB account per node role, with EXECUTE and SELECT on its objects only.

A role's account may run the procedures and functions, and read the views, of the templates the
role serves (:mod:`beds.provision.needs`), the key query of a template whose writes read the
record first (owner, locking, journal, audit; even when the query is internal), beds-rel's
``beds_journal_*`` objects for a journaled template, plus its ``beds_idempotency_*`` procedures
when it writes with idempotency keys (``[stores.rel] idempotency``). A role serving a template
with long operations (CALGON) may run their procedures, and a role that keeps tickets here
(this store is ``calgon.store`` and the role serves long operations or schedules retention
sweeps) beds-rel's ``beds_ticket_*`` procedures and its ``beds_tickets_v``
view (the ticket store, :mod:`beds_rel.tickets`). Nothing else: no table, no database-wide
privilege. The DBA's routines and views run as their definer (MariaDB's default
``SQL SECURITY DEFINER``), so they reach the tables the account itself cannot, and
``information_schema`` shows the account exactly its objects, which is what the node's start-up
check reads.

Accounts require TLS (``REQUIRE SSL``) when ``[stores.rel.tls]`` is configured. ``apply``
compares the account's password with its hash (``mysql.user``), never by logging in, so it
works from any host; it sends passwords as bound parameters and never quotes a statement or a
server message that holds one. ``SHOW GRANTS`` lines hold the password's hash: they are parsed,
never printed.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncmy
import attrs
from asyncmy import errors as my_errors

from beds.envelopes import Operation
from beds.errors import ConfigError, StoreError
from beds.policy import Finding
from beds.provision.needs import Grant, StoreAccount, StoreNeeds, merge_grants
from beds_rel.bindings import Call, plan_template
from beds_rel.errors import map_exceptions
from beds_rel.idempotency import CALLS as IDEMPOTENCY_CALLS
from beds_rel.journal import CALLS as JOURNAL_CALLS
from beds_rel.long_operations import long_calls
from beds_rel.migrations import READ as MIGRATIONS_VIEW
from beds_rel.settings import RelSettings, parse_settings
from beds_rel.tickets import CALLS as TICKET_CALLS
from beds_rel.tickets import VIEW as TICKET_VIEW

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from asyncmy.connection import Connection

    from beds.namaste import StoreSettings
    from beds.templates.model import Template

__all__ = ("Held", "RelProvisioner", "parse_grants")

_URL_KEY: Final = "stores.rel.url"
_IDENT = r"`(?:[^`]|``)*`"
_TARGET = re.compile(
    rf"^GRANT (?P<privileges>.+?) ON (?P<on>(?:(?:PROCEDURE|FUNCTION|PACKAGE BODY|PACKAGE) )?"
    rf"(?:{_IDENT}|\*)(?:\.(?:{_IDENT}|\*))?) TO (?P<rest>.+)$"
)
_PROXY = re.compile(r"^GRANT PROXY ON (?P<on>\S+) TO (?P<rest>.+)$")
_ROLE = re.compile(rf"^GRANT (?P<role>{_IDENT}) TO ")
_KINDS: Final = {"procedure": "PROCEDURE ", "function": "FUNCTION ", "view": ""}
_PRIVILEGE_OF_KIND: Final = {"procedure": "EXECUTE", "function": "EXECUTE", "view": "SELECT"}


@attrs.frozen(order=True)
class Held:
    """One privilege an account holds, as ``SHOW GRANTS`` says it."""

    privilege: str
    """``SELECT``, ``EXECUTE``, ``SELECT (`col`)``, ``GRANT OPTION``, ``PROXY`` or a role."""
    on: str
    """What it is on, as MariaDB writes it: ``PROCEDURE `db`.`p```, ```db`.*``, ``*.*``;
    empty for a role."""

    def key(self) -> tuple[str, str]:
        """For comparison: routine names are case-insensitive in MariaDB, the rest is not."""
        routine = self.on.startswith(("PROCEDURE ", "FUNCTION "))
        return (self.privilege.upper(), self.on.lower() if routine else self.on)

    def __str__(self) -> str:
        return f"role {self.privilege}" if not self.on else f"{self.privilege} ON {self.on}"


def _split_privileges(text: str) -> list[str]:
    """``SELECT (`a`, `b`), INSERT`` → ``["SELECT (`a`, `b`)", "INSERT"]``."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def parse_grants(lines: Iterable[str]) -> tuple[list[Held], bool]:
    """The privileges of ``SHOW GRANTS`` lines (``USAGE`` left out), and whether TLS is required.

    Lines that grant nothing (``SET DEFAULT ROLE``) are skipped.
    """
    held: list[Held] = []
    requires_tls = False
    for line in lines:
        role = _ROLE.match(line)
        proxy = _PROXY.match(line)
        target = _TARGET.match(line)
        if role is not None:
            held.append(Held(role.group("role"), ""))
            continue
        match = proxy or target
        if match is None:
            continue
        rest = match.group("rest")
        # The USAGE line carries the account's options: REQUIRE SSL, X509, ISSUER…
        requires_tls = requires_tls or bool(
            re.search(r" REQUIRE (SSL|X509|ISSUER|SUBJECT|CIPHER)", rest)
        )
        privileges = (
            ["PROXY"] if proxy is not None else _split_privileges(match.group("privileges"))
        )
        held += [Held(p, match.group("on")) for p in privileges if p.upper() != "USAGE"]
        if rest.endswith(" WITH GRANT OPTION"):
            held.append(Held("GRANT OPTION", match.group("on")))
    return sorted(set(held)), requires_tls


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _native_hash(password: str) -> str:
    """MariaDB's ``mysql_native_password`` hash: ``*`` + SHA1(SHA1(password)), upper case."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


class RelProvisioner:
    """The REL store's :class:`beds.provision.needs.StoreProvisioner`.

    Raises:
        ConfigError: ``[stores.rel]`` is invalid (from :func:`beds_rel.settings.parse_settings`).
    """

    store = "rel"
    service = "MariaDB"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = parse_settings(settings)
        self.user = self.settings.user
        # [stores.rel.tls] present: the node connects over TLS, so its account must too.
        self.require_tls = getattr(self.settings, "tls", None) is not None

    # -- the plan ---------------------------------------------------------------------------

    def grants(self, needs: StoreNeeds) -> tuple[Grant, ...]:
        """The role's templates' objects, beds-rel's procedures they use (module docstring)."""
        found: list[Grant] = []
        for use in needs.uses:
            template = use.template
            plan = plan_template(template)
            for operation, call in plan.writes.items():
                if use.handled or operation in use.operations:
                    found.append(_grant(call, f"{template.name} {operation.value}"))
            if plan.create_many is not None and (use.handled or Operation.CREATE in use.operations):
                found.append(_grant(plan.create_many, f"{template.name} create_many"))
            if use.handled or Operation.FETCH in use.operations:
                for name, call in plan.queries.items():
                    # An internal query is only called by handlers (never named by a request).
                    if use.handled or not template.queries[name].internal:
                        found.append(_grant(call, f"{template.name} query {name}"))
            key = template.key_query()
            if key is not None and key.name in plan.queries and _reads_by_key(template):
                # Owners, locking, journal and audit read the record through the key query.
                found.append(_grant(plan.queries[key.name], f"{template.name} key query"))
            if template.capabilities.journal:
                found += [_grant(call, f"{template.name} journal") for call in JOURNAL_CALLS]
            found += [
                _grant(call, f"{template.name} long operation {name}")
                for name, call in zip(template.long_operations, long_calls(template), strict=True)
            ]
        if needs.writes and self.settings.idempotency:
            found += [_grant(call, "idempotent writes") for call in IDEMPOTENCY_CALLS]
        if needs.keeps_tickets:  # this store is calgon.store, and the role uses tickets
            # The view too: the procedures answer from it, and start-up checks it exists.
            found += [_grant(call, "CALGON tickets") for call in (*TICKET_CALLS, TICKET_VIEW)]
        if found:  # start-up reads the record of schema migrations (beds_rel.migrations)
            found.append(_grant(MIGRATIONS_VIEW, "schema migrations check"))
        return merge_grants(found)

    def _who(self, account: StoreAccount) -> str:
        return f"'{account.user}'@'{account.host}'"

    def _wanted(self, account: StoreAccount) -> dict[tuple[str, str], Held]:
        database = _quote(self.settings.database)
        wanted = (
            Held(grant.privilege, f"{_KINDS[grant.kind]}{database}.{_quote(grant.name)}")
            for grant in account.grants
        )
        return {held.key(): held for held in wanted}

    def statements(self, account: StoreAccount) -> list[str]:
        """``CREATE USER`` (password ``***``) and one ``GRANT`` per privilege."""
        who = self._who(account)
        require = " REQUIRE SSL" if self.require_tls else ""
        lines = [f"CREATE USER IF NOT EXISTS {who} IDENTIFIED BY '***'{require};"]
        lines += [f"GRANT {held} TO {who};" for held in self._wanted(account).values()]
        return lines

    def url_for(self, account: StoreAccount, password: str) -> str:
        """``stores.rel.url`` logging in as the account."""
        netloc = f"{quote(account.user, safe='')}:{quote(password, safe='')}"
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return urlunsplit(
            ("mysql", f"{netloc}@{host}:{self.settings.port}", f"/{self.settings.database}", "", "")
        )

    # -- apply and review -------------------------------------------------------------------

    async def apply(self, account: StoreAccount, password: str, *, admin_url: str) -> list[str]:
        """Create the account or fix its password, TLS requirement and grants (idempotent)."""
        admin = self._admin_settings(admin_url)
        with map_exceptions():
            conn = await asyncmy.connect(**admin.connect_kwargs(with_database=False))
        try:
            return await self._apply(conn, account, password)
        finally:
            conn.close()

    async def _apply(self, conn: Connection, account: StoreAccount, password: str) -> list[str]:
        who, args = self._who(account), (account.user, account.host)
        changes: list[str] = []
        rows = await _rows(
            conn,
            "SELECT plugin, authentication_string, ssl_type FROM mysql.user "
            "WHERE User = %s AND Host = %s",
            args,
        )
        require = " REQUIRE SSL" if self.require_tls else ""
        if not rows:
            await _secret(conn, f"CREATE USER %s@%s IDENTIFIED BY %s{require}", (*args, password))
            changes.append(f"created account {who}{require.lower()}")
        else:
            plugin, digest, ssl_type = (str(value or "") for value in rows[0])
            if plugin != "mysql_native_password" or digest != _native_hash(password):
                await _secret(conn, "ALTER USER %s@%s IDENTIFIED BY %s", (*args, password))
                changes.append(f"set the password of {who}")
            if self.require_tls and not ssl_type:
                await _rows(conn, "ALTER USER %s@%s REQUIRE SSL", args)
                changes.append(f"made {who} require TLS")
        held, _ = parse_grants(
            str(row[0]) for row in await _rows(conn, "SHOW GRANTS FOR %s@%s", args)
        )
        wanted = self._wanted(account)
        have = {item.key() for item in held}
        for key, grant in wanted.items():
            if key not in have:
                await _rows(conn, f"GRANT {_literal(grant)} TO %s@%s", args)
                changes.append(f"granted {grant} to {who}")
        for item in held:
            if item.key() not in wanted:
                await _rows(conn, _revoke(item), args)
                changes.append(f"revoked {item} from {who}")
        return changes

    async def review(self, account: StoreAccount) -> list[Finding]:
        """Log in as ``stores.rel.url``'s account; what it holds beyond, or lacks of, the plan."""
        with map_exceptions():
            conn = await asyncmy.connect(**self.settings.connect_kwargs(with_database=False))
        try:
            lines = [str(row[0]) for row in await _rows(conn, "SHOW GRANTS FOR CURRENT_USER()", ())]
        finally:
            conn.close()
        held, requires_tls = parse_grants(lines)
        wanted = self._wanted(account)
        user = self.settings.user
        found = [
            Finding(_URL_KEY, f"account {user} has {item} beyond what its templates need")
            for item in held
            if item.key() not in wanted
        ]
        have = {item.key() for item in held}
        found += [
            Finding(_URL_KEY, f"account {user} lacks {grant}, which role {account.role} calls")
            for key, grant in wanted.items()
            if key not in have
        ]
        if self.require_tls and not requires_tls:
            found.append(
                Finding(
                    _URL_KEY,
                    f"account {user} may log in without TLS: ALTER USER ... REQUIRE SSL "
                    "([stores.rel.tls] is configured)",
                )
            )
        return found

    def _admin_settings(self, url: str) -> RelSettings:
        """The configured settings (TLS included), logging in as the admin URL's account."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError("is not a valid URL", key="--admin-url") from None
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not parts.username:
            raise ConfigError("must be mysql://user@host[:port]/", key="--admin-url")
        return attrs.evolve(
            self.settings,
            host=parts.hostname,
            port=port or 3306,
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            secondaries=(),
        )


def _reads_by_key(template: Template) -> bool:
    """Whether the node reads a record through the key query around its writes."""
    caps = template.capabilities
    return bool(template.operations) and (
        template.access.owner is not None or caps.locking or caps.journal or caps.audit
    )


def _grant(call: Call, reason: str) -> Grant:
    return Grant(
        kind=call.kind, name=call.name, privilege=_PRIVILEGE_OF_KIND[call.kind], reasons=(reason,)
    )


def _literal(held: Held | str) -> str:
    """Text put into a statement with bound parameters: its ``%`` (a wildcard grant) doubled."""
    return str(held).replace("%", "%%")


def _revoke(item: Held) -> str:
    if not item.on:
        return f"REVOKE {_literal(item.privilege)} FROM %s@%s"
    return f"REVOKE {_literal(item.privilege)} ON {_literal(item.on)} FROM %s@%s"


async def _rows(conn: Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    """Run a statement that holds no secret; the server's message names what failed."""
    with map_exceptions():
        async with conn.cursor() as cursor:
            await cursor.execute(sql, tuple(args))
            return list(await cursor.fetchall())


async def _secret(conn: Connection, sql: str, args: Sequence[Any]) -> None:
    """Run a statement that holds a password: a failure says the error number, nothing else."""
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, tuple(args))
    except my_errors.MySQLError as exc:
        errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        what = sql.split(" %s")[0]
        raise StoreError(
            f"MariaDB refused {what} (MariaDB error {errno})",
            details=(f"MariaDB error {errno}",),
        ) from None
