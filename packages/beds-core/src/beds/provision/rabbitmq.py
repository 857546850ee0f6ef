"""RabbitMQ: one user per node role, and one for clients, each limited to what it uses.

RabbitMQ checks three permissions per vhost, each a regular expression over the names of
exchanges and queues (docs/deployment.md, "Service accounts", has the table): *configure*
(declare, delete), *write* (publish to an exchange; bind a queue, on the queue's side) and
*read* (consume or get from a queue; bind, on the exchange's side; declare a queue that names a
dead-letter exchange). Every regex here is the anchored alternation of the exact names, each
escaped with :func:`re.escape` (which PCRE, RabbitMQ's engine, reads the same way), and ``^$``
(no name at all) when a role needs none, so one role's permissions match no name of another's.

What a node of a role touches (:func:`beds.transport.amqp.declare_topology`, the broker pools,
the event publisher, the control channel, the telemetry poller):

- configure: the four exchanges, the dead-letter queue, its own broker queues, every role's
  logs queues (each node declares them, so events wait for an admin node), the control and live
  exchanges, the control and live streams, and the cache invalidation queues (exclusive, named
  by RabbitMQ: ``amq.gen-`` and a suffix, the one prefix in the patterns; ``amq.`` names are
  refused in configuration, and an exclusive queue is its connection's alone);
- write: the logs exchange (lineage, audit), the dead-letter exchange, the control and live
  exchanges and streams, the cache invalidation queues,
  ``amq.default`` (replies go to ``amq.rabbitmq.reply-to.*`` and counted requeues to its own
  queue through the default exchange), and the queues it binds;
- read: its own queues, the logs queues and the dead-letter queue (declared or read by it), the
  control and live streams and exchanges, the cache invalidation queues, and the exchanges its
  queues are bound to.

A client publishes requests and consumes its replies from ``amq.rabbitmq.reply-to``, which
needs no permission: it may write to the events exchange and nothing else.

Commands are run by :class:`beds.provision.rabbitmqctl.RabbitCtl`, which never puts a password
in a command line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import attrs

from beds.errors import BedsError, ConfigError
from beds.policy import Finding, is_loopback
from beds.provision.rabbitmqctl import Permissions, RabbitCtl, command
from beds.transport.amqp import amqp_user, dead_letter_queue
from beds.transport.control import SERVER_NAMED, control_stream, live_stream

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from beds.config.model import Config
    from beds.provision.passwords import Passwords

__all__ = (
    "CLIENT",
    "DEFAULT_EXCHANGE",
    "AmqpAccount",
    "Permissions",
    "amqp_accounts",
    "apply_accounts",
    "client_permissions",
    "node_permissions",
    "pattern",
    "plan_lines",
    "review_user",
    "url_as",
    "vhost_of",
)

CLIENT: Final = "client"
"""The account name of clients (``beds call``, applications), next to the roles'."""
DEFAULT_EXCHANGE: Final = "amq.default"
"""The default exchange's name in permission checks."""
_NOTHING: Final = "^$"
_NO_TAGS_NEEDED: Final = "a node needs none"


@attrs.frozen(kw_only=True)
class AmqpAccount:
    """A RabbitMQ user of a role (or of clients) and its permissions on the vhost."""

    role: str
    user: str
    vhost: str
    permissions: Permissions


def pattern(names: Iterable[str], prefixes: Iterable[str] = ()) -> str:
    """An anchored regex matching exactly ``names`` and what starts with a prefix (``^$``: none)."""
    unique = [re.escape(name) for name in sorted(set(names))]
    unique += [re.escape(prefix) + ".+" for prefix in sorted(set(prefixes))]
    if not unique:
        return _NOTHING
    return "^(" + "|".join(unique) + ")$"


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` when its path is empty or ``/``)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def url_as(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` with ``password`` (for the role's secret file)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def node_permissions(config: Config, role: str) -> Permissions:
    """What a node of ``role`` declares, binds, publishes to and consumes (module docstring)."""
    amqp, control = config.amqp, config.control.enabled
    # A tickets broker has no queue (beds.calgon.lanes): nothing to declare or consume.
    brokers = {b: s for b, s in config.roles[role].brokers.items() if s.consumes}
    dead = dead_letter_queue(config)
    own = [config.queue_name(broker, role) for broker in brokers]
    own_bound = [config.queue_name(b, role) for b, settings in brokers.items() if settings.bindings]
    logs = {
        config.queue_name(broker, other): bool(settings.bindings)
        for other, role_settings in config.roles.items()
        for broker, settings in role_settings.brokers.items()
        if settings.type == "logs"
    }
    requests_bound = any(s.type == "requests" and s.bindings for s in brokers.values())
    stream = [amqp.control_exchange, amqp.live_exchange, control_stream(config)]
    stream = [*stream, live_stream(config)] if control else []
    # The cache reads' exclusive queues, named by RabbitMQ: no other connection may touch one.
    cache = [SERVER_NAMED] if control else []
    configure = [amqp.events_exchange, amqp.logs_exchange, amqp.dead_letter_exchange, dead]
    write = [amqp.logs_exchange, amqp.dead_letter_exchange, DEFAULT_EXCHANGE, dead, *own_bound]
    read = [amqp.dead_letter_exchange, dead, *own, *logs]
    write += [queue for queue, bound in logs.items() if bound]
    if requests_bound:
        read.append(amqp.events_exchange)
    syslog_bound = any(s.type == "syslog" and s.bindings for s in brokers.values())
    if any(logs.values()) or syslog_bound:  # binding a queue to it needs read on it
        read.append(amqp.logs_exchange)
    return Permissions(
        configure=pattern([*configure, *own, *logs, *stream], cache),
        write=pattern([*write, *stream], cache),
        read=pattern([*read, *stream], cache),
    )


def client_permissions(config: Config) -> Permissions:
    """A client's: publish requests; its replies come through the reply-to pseudo-queue."""
    return Permissions(
        configure=_NOTHING, write=pattern([config.amqp.events_exchange]), read=_NOTHING
    )


def amqp_accounts(
    config: Config, roles: Sequence[str], user_of: Callable[[str], str]
) -> list[AmqpAccount]:
    """The accounts of ``roles`` (a role of ``config.roles``, or :data:`CLIENT`).

    Raises:
        ConfigError: two roles would share a user name.
    """
    vhost = vhost_of(config.amqp.url)
    accounts = [
        AmqpAccount(
            role=role,
            user=user_of(role),
            vhost=vhost,
            permissions=client_permissions(config)
            if role == CLIENT
            else node_permissions(config, role),
        )
        for role in roles
    ]
    users = [account.user for account in accounts]
    for user in users:
        if users.count(user) > 1:
            raise ConfigError(f"two roles would share the RabbitMQ user {user!r}", key="roles")
    return accounts


def plan_lines(config: Config, accounts: Sequence[AmqpAccount], passwords: Passwords) -> list[str]:
    """What ``--apply`` does, as rabbitmqctl commands, with where each password comes from."""
    vhost = vhost_of(config.amqp.url)
    lines = [f"# vhost {vhost} (amqp.url)", command("add_vhost", vhost)]
    for account in accounts:
        source = passwords.describe(account.role, "rabbitmq", account.user)
        lines += [
            f"# role {account.role}: user {account.user}, password {source}",
            command("add_user", account.user) + "   # password on stdin: ***",
            command("set_user_tags", account.user) + "   # no tags",
            command(
                "set_permissions",
                "-p",
                account.vhost,
                account.user,
                *(regex for _, regex in account.permissions.items()),
            ),
        ]
    nodes = [account.user for account in accounts if account.role != CLIENT]
    if nodes:
        names = ", ".join(f'"{user}"' for user in nodes)
        lines.append(
            f"# then trust the roles' events: control.trusted_users = [{names}] and "
            f"lineage.trusted_users = [{names}]"
        )
    return lines


def apply_accounts(
    ctl: RabbitCtl,
    config: Config,
    accounts: Sequence[AmqpAccount],
    passwords: Passwords,
    *,
    on_change: Callable[[str], object] | None = None,
) -> list[str]:
    """Create or fix each account; one line per change (empty: nothing changed).

    ``on_change`` is told each change as it is made (so a failure later loses none).

    Raises:
        BedsError: rabbitmqctl failed; ConfigError: a password has no source.
    """
    changes: list[str] = []

    def changed(change: str) -> None:
        changes.append(change)
        if on_change is not None:
            on_change(change)

    vhost = vhost_of(config.amqp.url)
    if vhost not in ctl.vhosts():
        ctl.run("add_vhost", vhost)
        changed(f"created vhost {vhost}")
    users = ctl.users()
    for account in accounts:
        secret = passwords.get(account.role, "rabbitmq", account.user)
        user = account.user
        if user not in users:
            ctl.add_user(user, secret.value)
            changed(f"created user {user} (password {secret.source})")
        elif not ctl.password_is(user, secret.value):
            ctl.change_password(user, secret.value)
            changed(f"set the password of {user} (password {secret.source})")
        if users.get(user):
            ctl.run("set_user_tags", user)
            changed(f"removed the tags {', '.join(users[user])} of {user}")
        held = ctl.permissions(user) if user in users else {}
        if held.get(account.vhost) != account.permissions:
            wanted = (regex for _, regex in account.permissions.items())
            ctl.run("set_permissions", "-p", account.vhost, user, *wanted)
            changed(f"set the permissions of {user} on vhost {account.vhost}")
        for other in sorted(set(held) - {account.vhost}):
            ctl.run("clear_permissions", "-p", other, user)
            changed(f"cleared the permissions of {user} on vhost {other}")
        passwords.write_url("rabbitmq", user, url_as(config.amqp.url, user, secret.value))
    return changes


def review_user(ctl: RabbitCtl | None, config: Config) -> list[Finding]:
    """What the node's RabbitMQ user may do beyond its role's needs (``beds check --production``).

    Raises:
        BedsError: the permissions cannot be seen here (no rabbitmqctl, a broker that is not on
            this machine, or rabbitmqctl failed); the message says which.
    """
    url = config.amqp.url
    host = urlsplit(url).hostname
    user, role = amqp_user(url), config.node.role
    if not is_loopback(host):
        raise BedsError(
            f"RabbitMQ at {host} is not on this machine: check the permissions of {user} there"
        )
    if ctl is None:
        raise BedsError(
            f"rabbitmqctl is not installed here: check the permissions of {user} with it"
        )
    users = ctl.users()
    if user not in users:
        raise BedsError(
            f"the local rabbitmqctl knows no user {user}: check its permissions where it is"
        )
    found = []
    if users[user]:
        found.append(
            Finding(
                "amqp.url", f"user {user} has the tags {', '.join(users[user])}: {_NO_TAGS_NEEDED}"
            )
        )
    vhost, wanted = vhost_of(url), node_permissions(config, role)
    held = ctl.permissions(user)
    for other in sorted(set(held) - {vhost}):
        found.append(
            Finding(
                "amqp.url",
                f"user {user} has permissions on vhost {other}, which role {role} does not use",
            )
        )
    mine = held.get(vhost)
    if mine is None:
        found.append(Finding("amqp.url", f"user {user} has no permissions on vhost {vhost}"))
        return found
    for (name, regex), (_, needed) in zip(mine.items(), wanted.items(), strict=True):
        if regex != needed:
            found.append(
                Finding(
                    "amqp.url",
                    f"user {user} may {name} '{regex}' on vhost {vhost}, not what role {role} "
                    f"needs: '{needed}'",
                )
            )
    return found
