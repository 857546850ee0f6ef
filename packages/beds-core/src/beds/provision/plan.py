"""The plan of ``beds provision``: every role's accounts, computed before anything is touched.

From the configuration (roles, their brokers and bindings, topology names, stores) and the
installed plugins (templates, handlers, the stores' provisioners); the same computation serves
``beds check --production``, which compares what accounts hold with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import attrs
import pluggy

from beds.calgon.lanes import lane_templates
from beds.calgon.retention import swept_templates
from beds.config.stores import split_connection
from beds.errors import ConfigError, PluginError
from beds.namaste import StoreSettings
from beds.plugins import Hooks, make_plugin_manager
from beds.provision.needs import (
    StoreAccount,
    StoreNeeds,
    StoreProvisioner,
    TemplateUse,
    request_patterns,
    served_templates,
)
from beds.provision.rabbitmq import CLIENT
from beds.templates.model import Template

if TYPE_CHECKING:
    from beds.config.model import Config

__all__ = (
    "DEFAULT_USER",
    "Installed",
    "account_of",
    "installed",
    "provisioner_of",
    "roles_of",
    "store_needs",
    "user_namer",
)

DEFAULT_USER: Final = "beds-{env}-{role}"
"""The default name of a role's account on every service (``--user-name``)."""
_USER: Final = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
"""Names every service takes unquoted in a URL and a statement (MariaDB allows 80 characters)."""


@attrs.frozen(kw_only=True)
class Installed:
    """What the installed plugins provide."""

    templates: Mapping[str, Template]
    handled: frozenset[str]
    """Templates with handlers (:mod:`beds.handlers`)."""
    pm: pluggy.PluginManager


def installed(config: Config, plugin_manager: pluggy.PluginManager | None = None) -> Installed:
    """Load the plugins the node would load, and what they register.

    Raises:
        PluginError: a plugin failed to load (production) or registered something twice.
        TemplateError: a template declaration is invalid.
    """
    pm = plugin_manager or make_plugin_manager(
        disabled=config.plugins.disabled, strict=config.production
    )
    hooks = Hooks(pm)
    templates = hooks.register_templates().templates
    handled = frozenset(name for name, _ in hooks.register_handlers().handlers)
    return Installed(templates=templates, handled=handled, pm=pm)


def roles_of(config: Config, roles: Sequence[str], *, client: bool) -> list[str]:
    """The roles to provision: ``roles``, or every role (and clients, with ``client``).

    Raises:
        ConfigError: one of ``roles`` is not a role of the configuration.
    """
    known = [*config.roles, *([CLIENT] if client else [])]
    unknown = [role for role in roles if role not in known]
    if unknown:
        raise ConfigError(f"unknown role {unknown[0]!r}; known: {', '.join(known)}", key="--role")
    return list(dict.fromkeys(roles)) if roles else known


def user_namer(template: str, env: str) -> Callable[[str], str]:
    """Turn ``--user-name`` (such as ``beds-{env}-{role}``) into role → user name.

    Raises:
        ConfigError: the template lacks ``{role}``, names other fields, or makes a name that
            is not 1 to 80 of letters, digits, ``_``, ``.``, ``-``.
    """
    if "{role}" not in template:
        raise ConfigError(
            "must contain {role}, so that every role has its own account", key="--user-name"
        )

    def name(role: str) -> str:
        try:
            user = template.format(env=env, role=role)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"may name only {{env}} and {{role}} ({exc})", key="--user-name"
            ) from None
        if not _USER.match(user):
            raise ConfigError(
                f"makes {user!r}, which is not 1 to 80 of letters, digits, '_', '.', '-'",
                key="--user-name",
            )
        return user

    return name


def store_needs(config: Config, found: Installed, role: str) -> dict[str, StoreNeeds]:
    """What ``role`` does with each connection it uses (one it does not use is absent).

    Keyed by connection (:attr:`beds.templates.model.Template.connection`): a store's default
    one by the store's name (``rel``), a named database's as ``rel.warehouse``; each is its own
    server's, or database's, account and grants.
    """
    role_settings = config.roles[role]
    uses = served_templates(found.templates, request_patterns(role_settings), found.handled)
    # As the node's start-up decides (beds.ipl): its tickets brokers run these long operations.
    for name, template in lane_templates(config, found.templates, role).items():
        uses.setdefault(name, TemplateUse(template=template, operations=frozenset()))
    by_connection: dict[str, list[TemplateUse]] = {}
    for use in uses.values():
        by_connection.setdefault(use.template.connection, []).append(use)
    keeps_events = any(settings.type == "logs" for settings in role_settings.brokers.values())
    # As the node's start-up decides (beds.ipl): it serves long operations, or records sweeps.
    keeps_tickets = any(use.template.long_operations for use in uses.values()) or bool(
        swept_templates(config, found.templates, role)
    )
    connections = set(by_connection) | ({config.lineage.store} if keeps_events else set())
    connections |= {config.calgon.store} if keeps_tickets else set()
    return {
        connection: StoreNeeds(
            role=role,
            store=split_connection(connection)[0],
            database=split_connection(connection)[1],
            uses=tuple(by_connection.get(connection, ())),
            keeps_events=keeps_events and connection == config.lineage.store,
            keeps_tickets=keeps_tickets and connection == config.calgon.store,
        )
        for connection in sorted(connections)
    }


def provisioner_of(config: Config, found: Installed, connection: str) -> StoreProvisioner:
    """The provisioner of a connection (``rel``, ``rel.warehouse``), built from its table.

    Raises:
        ConfigError: the table is invalid (named by the adapter's plugin), or the store's
            configuration does not declare the named database.
        PluginError: no installed plugin, or more than one, provisions the store.
    """
    settings = StoreSettings.of(config, connection)
    store = settings.store
    answers = [
        answer
        for answer in found.pm.hook.beds_store_provisioner(settings=settings)
        if answer is not None
    ]
    if not answers:
        raise PluginError(f"no installed plugin provisions accounts of store {store!r}")
    if len(answers) > 1:
        raise PluginError(f"{len(answers)} plugins provision accounts of store {store!r}")
    answer = answers[0]
    if not isinstance(answer, StoreProvisioner):
        raise PluginError(
            f"beds_store_provisioner answered {type(answer).__name__} for store {store!r}, "
            "not a StoreProvisioner"
        )
    return answer


def account_of(
    config: Config,
    found: Installed,
    provisioner: StoreProvisioner,
    role: str,
    *,
    user: str,
    host: str = "%",
    connection: str = "",
) -> StoreAccount | None:
    """``role``'s account on the provisioner's connection, or ``None`` when it uses none of it.

    ``connection`` is the one the provisioner was built for (``rel.warehouse``); empty: its
    store's default connection.
    """
    needs = store_needs(config, found, role).get(connection or provisioner.store)
    grants = provisioner.grants(needs) if needs is not None else ()
    if not grants:
        return None
    return StoreAccount(role=role, user=user, grants=grants, host=host)
