"""What a node role uses, and the shapes a store's provisioner works with.

A role *serves* a template when one of its request brokers is bound to a routing key of one of
the template's operations (:func:`beds.routing.routing_key`); it then calls that operation's
database objects and nothing else. A template whose operations are served by a handler
(:mod:`beds.handlers`) is different: handler code may call any object of its template, and of
the other handled templates of its package (beds-identity's login reads ``beds_user``'s
credentials), so serving one of them serves all of them, whole.

The node serves exactly these templates (:class:`beds.ipl.Ipl`), and ``beds provision`` grants
each role's accounts exactly their objects: the two read the same function, so an account
never lacks an object its node calls, nor holds one it does not.

Store adapters describe their own objects and accounts through a :class:`StoreProvisioner`,
which their plugin returns from the ``beds_store_provisioner`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

from beds.envelopes import WRITE_OPERATIONS, Operation
from beds.routing import routing_key, topic_matches
from beds.templates.model import Template

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from beds.config.model import RoleSettings
    from beds.policy import Finding

__all__ = (
    "Grant",
    "StoreAccount",
    "StoreNeeds",
    "StoreProvisioner",
    "TemplateUse",
    "merge_grants",
    "package_of",
    "request_patterns",
    "routed_operations",
    "served_templates",
)


@attrs.frozen(kw_only=True)
class TemplateUse:
    """One template a role serves, and how."""

    template: Template
    operations: frozenset[Operation]
    """The operations routed to the role (empty for a handled template served for its
    package's sake)."""
    handled: bool = False
    """Served by handler code, which may call any of the template's objects."""


def request_patterns(role: RoleSettings) -> tuple[str, ...]:
    """The routing-key patterns of a role's request brokers (logs brokers read another exchange)."""
    return tuple(
        pattern
        for settings in role.brokers.values()
        if settings.type == "requests"
        for pattern in settings.bindings
    )


def _operations(template: Template) -> tuple[Operation, ...]:
    """The operations a request may ask of ``template``.

    Its writes, fetch if it has queries, submit and ticket if it has long operations (a
    template may have only those).
    """
    fetch = (Operation.FETCH,) if template.queries else ()
    calgon = (Operation.SUBMIT, Operation.TICKET) if template.long_operations else ()
    return (*fetch, *template.operations, *calgon)


def routed_operations(template: Template, patterns: Sequence[str]) -> frozenset[Operation]:
    """The operations of ``template`` whose routing keys one of ``patterns`` routes."""
    return frozenset(
        operation
        for operation in _operations(template)
        if any(
            topic_matches(pattern, routing_key(template.name, operation)) for pattern in patterns
        )
    )


def package_of(template: Template) -> str:
    """The package that ships ``template``: its distribution, else its resource's top folder."""
    return template.distribution or template.source.partition("/")[0]


def served_templates(
    templates: Mapping[str, Template], patterns: Sequence[str], handled: Collection[str]
) -> dict[str, TemplateUse]:
    """The templates a role with these request patterns serves (see the module docstring).

    Args:
        templates: every registered template by name.
        patterns: the role's :func:`request_patterns`.
        handled: the names of the templates with handlers.
    """
    uses = {
        name: TemplateUse(template=template, operations=operations, handled=name in handled)
        for name, template in templates.items()
        if (operations := routed_operations(template, patterns))
    }
    packages = {package_of(use.template) for use in uses.values() if use.handled}
    for name in sorted(handled):
        template = templates.get(name)
        if template is not None and name not in uses and package_of(template) in packages:
            uses[name] = TemplateUse(template=template, operations=frozenset(), handled=True)
    return dict(sorted(uses.items()))


@attrs.frozen(kw_only=True, order=True)
class Grant:
    """One privilege on one database object (or on the database itself)."""

    kind: str
    """What the object is, in the store's words: ``procedure``, ``function``, ``view``
    (MariaDB); ``collection``, ``database`` (MongoDB)."""
    name: str
    privilege: str
    """``EXECUTE``, ``SELECT`` (MariaDB); an action such as ``find`` (MongoDB)."""
    reasons: tuple[str, ...] = attrs.field(default=(), eq=False, order=False)
    """Why the role needs it, such as ``spew_post create``."""


def merge_grants(grants: Sequence[Grant]) -> tuple[Grant, ...]:
    """The grants once each, sorted, with the reasons of duplicates joined."""
    merged: dict[Grant, list[str]] = {}
    for grant in grants:
        reasons = merged.setdefault(grant, [])
        reasons += [reason for reason in grant.reasons if reason not in reasons]
    return tuple(
        attrs.evolve(grant, reasons=tuple(reasons)) for grant, reasons in sorted(merged.items())
    )


@attrs.frozen(kw_only=True)
class StoreNeeds:
    """What one role does with one store's connection (its default one, or a named database)."""

    role: str
    store: str
    database: str = ""
    """The named database (``[stores.<store>.databases.<name>]``); ``""``: the default one."""
    uses: tuple[TemplateUse, ...]
    """The role's templates of this connection."""
    keeps_events: bool = False
    """The role's logs brokers keep lineage events in this store (``lineage.store``)."""
    keeps_tickets: bool = False
    """The role records, reads or runs CALGON tickets in this store (``calgon.store``): it serves
    a template with long operations (it submits, reads and runs their tickets), or records
    retention sweeps (its ``calgon.retention_broker``)."""

    @property
    def writes(self) -> bool:
        """Whether the role writes through this store (it then keeps idempotency keys)."""
        return any(
            not WRITE_OPERATIONS.isdisjoint(
                use.template.operations if use.handled else use.operations
            )
            for use in self.uses
        )


@attrs.frozen(kw_only=True)
class StoreAccount:
    """The account one role logs in to a store with, and what it may do there."""

    role: str
    user: str
    grants: tuple[Grant, ...]
    host: str = "%"
    """Where the account may log in from: MariaDB's host part; other stores ignore it."""


@runtime_checkable
class StoreProvisioner(Protocol):
    """A store's side of ``beds provision`` and ``beds check --production``.

    A plugin returns one from ``beds_store_provisioner`` for the store it serves, built from the
    store's configuration table. No method prints or returns a password: statements show it as
    ``***``, and errors never quote a statement that holds one.
    """

    store: str
    """The store name, such as ``"rel"``."""
    service: str
    """The server's name for people, such as ``"MariaDB"``."""
    user: str
    """The account the configuration logs in as (``beds check --production`` reviews it)."""

    def grants(self, needs: StoreNeeds) -> tuple[Grant, ...]:
        """Every privilege a role with these needs uses; empty when it needs none.

        Its templates' objects, the store's own (idempotency keys, the lineage store), nothing
        else.
        """

    def statements(self, account: StoreAccount) -> list[str]:
        """What :meth:`apply` would send, in the server's language, passwords as ``***``."""

    def url_for(self, account: StoreAccount, password: str) -> str:
        """The configured URL, logging in as ``account`` (for the role's secret file)."""

    async def apply(self, account: StoreAccount, password: str, *, admin_url: str) -> list[str]:
        """Make the account exactly what it should be (idempotent).

        Created, its password and grants set, privileges beyond them revoked.

        Args:
            account: the role's account.
            password: its password (never shown).
            admin_url: where to connect as an account that may create users and grant.

        Returns:
            One line per change made; empty when there was nothing to change.

        Raises:
            BedsError: the server refused, or cannot be reached (without the password).
        """

    async def review(self, account: StoreAccount) -> list[Finding]:
        """Log in as the configured account; what it holds beyond ``account.grants``, or lacks.

        Empty: exactly what it needs.

        Raises:
            BedsError: the privileges cannot be seen (the server cannot be reached).
        """
