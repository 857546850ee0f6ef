"""REC accounts: one MongoDB user per node role, holding one role of its own.

The role (named like the user, in ``[stores.rec] database``) grants actions on the collections
of the templates the node serves (:mod:`beds.provision.needs`) and nothing else:

=====================================  ======================================================
what the role does                     actions
=====================================  ======================================================
serves a template's fetch              ``find`` on its collection
serves its create / update / delete    ``insert`` / ``update`` / ``remove``, and ``find``
                                       (writes read the record back; audits read it before)
serves any of its operations           ``listIndexes`` on its collection, ``listCollections``
                                       on the database (the start-up check of declared objects)
writes with idempotency keys           ``find``, ``insert``, ``update``, ``remove`` on
                                       ``beds_idempotency``
keeps lineage events (logs brokers)    ``insert``, ``find``, ``remove`` on ``msLogs`` (remove:
                                       the purge after ``lineage.retention_days``)
serves a journaled template            ``find``, ``listIndexes`` on ``beds_journal`` (the
                                       history query, the start-up check), and ``insert``
                                       where it writes the template
serves a template's long operations    ``find`` on each collection its pipelines read;
                                       ``insert``, ``remove`` on an ``$out`` target;
                                       ``insert``, ``update`` on a ``$merge`` target
keeps CALGON tickets (this store is    ``find``, ``insert``, ``update``, ``remove``,
``calgon.store``, the role uses them)  ``listIndexes`` on ``beds_tickets`` and
                                       ``beds_ticket_results``; ``listCollections``
=====================================  ======================================================

Tickets: a role gets the ticket collections when this store is ``calgon.store`` and the role
serves a template with long operations or records retention sweeps
(``StoreNeeds.keeps_tickets``).

``apply`` creates or updates the role (its privileges replaced, no inherited role) and the
user (that one role; its password checked by logging in as it, and set when that fails).
SecantusDB, the wire server of the tests, has the same commands (``createRole``,
``createUser``, ``rolesInfo``, ``usersInfo``); it enforces them only when started with
``require_auth``. An embedded server (no ``uri``) is for development and has no accounts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError

from beds.envelopes import WRITE_OPERATIONS, Operation
from beds.errors import BedsError, StoreError, StoreUnavailable
from beds.migrations import RECORD as MIGRATIONS
from beds.policy import Finding
from beds.provision.needs import Grant, StoreAccount, StoreNeeds, merge_grants
from beds_rec.bindings import plan_template
from beds_rec.connect import client_options
from beds_rec.events import COLLECTION as EVENTS_COLLECTION
from beds_rec.idempotency import COLLECTION as KEYS_COLLECTION
from beds_rec.journal import COLLECTION as JOURNAL_COLLECTION
from beds_rec.long_operations import plan_long_operations
from beds_rec.settings import parse_settings
from beds_rec.tickets import RESULTS as TICKET_RESULTS
from beds_rec.tickets import TICKETS

if TYPE_CHECKING:
    from collections.abc import Iterable

    from beds.namaste import StoreSettings
    from beds.templates.model import Template

__all__ = ("RecProvisioner",)

_URI_KEY: Final = "stores.rec.uri"
_ACTIONS: Final = {
    Operation.CREATE: "insert",
    Operation.UPDATE: "update",
    Operation.DELETE: "remove",
}
_TICKET_ACTIONS: Final = ("find", "insert", "update", "remove", "listIndexes")
"""What keeping tickets takes on each ticket collection (:mod:`beds_rec.tickets`)."""
_AUTH_FAILED: Final = 18
"""MongoDB's error code for a login with a wrong user or password."""

Triple = tuple[str, str, str]
"""(database, collection — empty for the database itself, action)."""


class RecProvisioner:
    """The REC store's :class:`beds.provision.needs.StoreProvisioner`.

    Raises:
        ConfigError: ``[stores.rec]`` is invalid (from :func:`beds_rec.settings.parse_settings`).
    """

    store = "rec"
    service = "MongoDB"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = parse_settings(settings)
        uri = self.settings.uri
        self.user = (urlsplit(uri).username or "") if uri else ""

    # -- the plan ---------------------------------------------------------------------------

    def grants(self, needs: StoreNeeds) -> tuple[Grant, ...]:
        """The role's collections' actions (see the module docstring's table)."""
        found: list[Grant] = []
        for use in needs.uses:
            template = use.template
            collection = plan_template(template).collection
            operations = set(use.operations)
            if use.handled:
                operations |= {Operation.FETCH, *template.operations}
            why = f"{template.name} {', '.join(sorted(op.value for op in operations))}"
            actions = {"listIndexes", "find"} | {
                _ACTIONS[op] for op in operations if op in _ACTIONS
            }
            found += [_grant(collection, action, why) for action in actions]
            found.append(
                Grant(kind="database", name="", privilege="listCollections", reasons=(why,))
            )
            if template.capabilities.journal:
                journal = {"find", "listIndexes"}
                if not WRITE_OPERATIONS.isdisjoint(operations):
                    journal.add("insert")
                found += [_grant(JOURNAL_COLLECTION, action, why) for action in journal]
            if template.long_operations:
                found += _long_operation_grants(template, collection)
        if needs.writes and self.settings.idempotency:
            keys = ("find", "insert", "update", "remove")
            found += [_grant(KEYS_COLLECTION, action, "idempotent writes") for action in keys]
        if needs.keeps_events:
            found += [
                _grant(EVENTS_COLLECTION, action, "lineage events")
                for action in ("insert", "find", "remove")
            ]
        if needs.keeps_tickets:
            why = "CALGON tickets"
            found += [
                _grant(name, action, why)
                for name in (TICKETS, TICKET_RESULTS)
                for action in _TICKET_ACTIONS
            ]
            found.append(
                Grant(kind="database", name="", privilege="listCollections", reasons=(why,))
            )
        if found:  # start-up reads the record of schema migrations (beds_rec.migrations)
            why = "schema migrations check"
            found.append(_grant(MIGRATIONS, "find", why))
            found.append(
                Grant(kind="database", name="", privilege="listCollections", reasons=(why,))
            )
        return merge_grants(found)

    def _privileges(self, account: StoreAccount) -> list[dict[str, Any]]:
        by_resource: dict[str, set[str]] = {}
        for grant in account.grants:
            by_resource.setdefault(grant.name if grant.kind == "collection" else "", set()).add(
                grant.privilege
            )
        database = self.settings.database
        return [
            {"resource": {"db": database, "collection": name}, "actions": sorted(actions)}
            for name, actions in sorted(by_resource.items())
        ]

    def statements(self, account: StoreAccount) -> list[str]:
        """Mongosh commands: ``createRole`` and ``createUser`` (password ``***``)."""
        database = self.settings.database
        role = {"role": account.user, "privileges": self._privileges(account), "roles": []}
        user = {
            "user": account.user,
            "pwd": "***",
            "roles": [{"role": account.user, "db": database}],
        }
        use = f"db.getSiblingDB({orjson.dumps(database).decode()})"
        return [
            f"{use}.createRole({orjson.dumps(role).decode()})",
            f"{use}.createUser({orjson.dumps(user).decode()})",
        ]

    def url_for(self, account: StoreAccount, password: str) -> str:
        """``stores.rec.uri`` logging in as the account (``authSource`` its database)."""
        parts = urlsplit(self._uri())
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(account.user, safe='')}:{quote(password, safe='')}@{host}"
        query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() != "authsource"]
        query.append(("authSource", self.settings.database))
        return urlunsplit((parts.scheme, netloc, parts.path or "/", urlencode(query), ""))

    def _uri(self) -> str:
        if self.settings.uri is None:
            raise BedsError(
                "the embedded MongoDB server (no stores.rec.uri) is for development and has no "
                "accounts: set stores.rec.uri"
            )
        return self.settings.uri

    # -- apply and review -------------------------------------------------------------------

    async def apply(self, account: StoreAccount, password: str, *, admin_url: str) -> list[str]:
        """Create or update the role and the user (idempotent)."""
        admin_url = admin_url or self._uri()
        database, changes = self.settings.database, []
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            admin_url, **client_options(self.settings)
        )
        try:
            db = client[database]
            privileges = self._privileges(account)
            roles = (await _command(db, "rolesInfo", account.user, showPrivileges=True))["roles"]
            if not roles:
                await _command(db, "createRole", account.user, privileges=privileges, roles=[])
                changes.append(f"created role {account.user} in {database}")
            elif _triples(roles[0].get("privileges", ()), database) != _triples(
                privileges, database
            ) or roles[0].get("roles"):
                await _command(db, "updateRole", account.user, privileges=privileges, roles=[])
                changes.append(f"set the privileges of role {account.user} in {database}")
            own = [{"role": account.user, "db": database}]
            users = (await _command(db, "usersInfo", account.user))["users"]
            if not users:
                await _secret(db, "createUser", account.user, pwd=password, roles=own)
                return [*changes, f"created user {account.user} in {database}"]
            if _roles(users[0].get("roles", ())) != _roles(own):
                await _command(db, "updateUser", account.user, roles=own)
                changes.append(f"set the roles of user {account.user} to its own")
            if not await self._logs_in(admin_url, account.user, password):
                await _secret(db, "updateUser", account.user, pwd=password)
                changes.append(f"set the password of user {account.user}")
        finally:
            await client.close()
        return changes

    async def _logs_in(self, url: str, user: str, password: str) -> bool:
        parts = urlsplit(url)
        anonymous = urlunsplit(
            (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, "")
        )
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            anonymous,
            username=user,
            password=password,
            authSource=self.settings.database,
            **client_options(self.settings),
        )
        try:
            await client[self.settings.database].command("ping")
        except OperationFailure as exc:
            if exc.code == _AUTH_FAILED:
                return False
            raise StoreError(
                "MongoDB refused a login", details=(f"MongoDB error {exc.code}",)
            ) from None
        except PyMongoError as exc:
            raise StoreUnavailable(
                "MongoDB cannot be reached", details=(type(exc).__name__,)
            ) from None
        finally:
            await client.close()
        return True

    async def review(self, account: StoreAccount) -> list[Finding]:
        """As ``stores.rec.uri``'s user; what its roles grant beyond, or lack of, its plan."""
        uri = self._uri()
        if not self.user:
            return [
                Finding(
                    _URI_KEY,
                    f"logs in without a user: give role {account.role} its own (beds provision "
                    "mongodb) and make the server require it",
                )
            ]
        database = self.settings.database
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri, **client_options(self.settings)
        )
        try:
            db = client[database]
            found, held = [], set()
            users = (await _command(db, "usersInfo", self.user))["users"]
            for role in users[0].get("roles", ()) if users else ():
                infos = (
                    await _command(
                        client[role["db"]], "rolesInfo", role["role"], showPrivileges=True
                    )
                )["roles"]
                for info in infos:
                    if info.get("isBuiltin"):
                        found.append(f"the built-in role {info['role']} on {info['db']}")
                        continue
                    held |= _triples(
                        info.get("inheritedPrivileges") or info.get("privileges", ()), database
                    )
                    found += [
                        f"the role {r['role']} on {r['db']}"
                        for r in info.get("inheritedRoles", ()) or info.get("roles", ())
                    ]
        finally:
            await client.close()
        wanted = _triples(self._privileges(account), database)
        lines = [
            Finding(_URI_KEY, f"user {self.user} has {what}: grant its own role only")
            for what in found
        ]
        lines += [
            Finding(
                _URI_KEY,
                f"user {self.user} may {action} on {_where(db_name, coll)} beyond what its "
                "templates need",
            )
            for db_name, coll, action in sorted(held - wanted)
        ]
        lines += [
            Finding(
                _URI_KEY,
                f"user {self.user} may not {action} on {_where(db_name, coll)}, which role "
                f"{account.role} needs",
            )
            for db_name, coll, action in sorted(wanted - held)
        ]
        return lines


def _grant(collection: str, action: str, reason: str) -> Grant:
    return Grant(kind="collection", name=collection, privilege=action, reasons=(reason,))


def _long_operation_grants(template: Template, collection: str) -> list[Grant]:
    """What running the template's pipelines takes: reading their collections, writing targets."""
    found: list[Grant] = []
    for name, plan in plan_long_operations(template, collection).items():
        why = f"{template.name} long operation {name}"
        found += [_grant(read, "find", why) for read in (plan.collection, *plan.reads)]
        found += [
            _grant(target, action, why)
            for target, actions in plan.writes.items()
            for action in actions
        ]
    return found


def _where(database: str, collection: str) -> str:
    return f"{database}.{collection}" if collection else f"database {database}"


def _triples(privileges: Iterable[dict[str, Any]], database: str) -> set[Triple]:
    found: set[Triple] = set()
    for privilege in privileges:
        resource = privilege.get("resource", {})
        if resource.get("cluster") or resource.get("anyResource"):
            found |= {("*cluster*", "", str(action)) for action in privilege.get("actions", ())}
            continue
        where = (str(resource.get("db", database)), str(resource.get("collection", "")))
        found |= {(*where, str(action)) for action in privilege.get("actions", ())}
    return found


def _roles(roles: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(str(role.get("role")), str(role.get("db"))) for role in roles}


async def _command(db: Any, name: str, value: Any, **fields: Any) -> dict[str, Any]:
    """Run a command that holds no secret; a refusal quotes the server's message."""
    try:
        answer: dict[str, Any] = await db.command(name, value, **fields)
    except OperationFailure as exc:
        raise StoreError(
            f"MongoDB refused {name}",
            details=(
                f"MongoDB error {exc.code}: {exc.details.get('errmsg', '') if exc.details else ''}",
            ),
        ) from None
    except PyMongoError as exc:
        raise StoreUnavailable(
            f"MongoDB did not answer {name}", details=(type(exc).__name__,)
        ) from None
    return answer


async def _secret(db: Any, name: str, value: Any, **fields: Any) -> None:
    """Run a command that holds a password: a refusal says the error code, nothing else."""
    try:
        await db.command(name, value, **fields)
    except OperationFailure as exc:
        raise StoreError(
            f"MongoDB refused {name}", details=(f"MongoDB error {exc.code}",)
        ) from None
    except PyMongoError as exc:
        raise StoreUnavailable(
            f"MongoDB did not answer {name}", details=(type(exc).__name__,)
        ) from None
