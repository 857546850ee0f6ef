"""``beds check --production``: what a node's accounts hold beyond, or lack of, their role's plan.

The command runs the start-up checks as production would, the production policy
(:mod:`beds.policy`) first; this module adds what the configuration alone cannot show, each line
naming the configuration key whose account it is about:

- the RabbitMQ user's tags and permissions, compared with its role's
  (:func:`beds.provision.rabbitmq.review_user`), when ``rabbitmqctl`` can see them;
- every store account's privileges, compared with what the role's templates call (each store's
  :class:`~beds.provision.needs.StoreProvisioner`), seen by logging in as the account.

A privilege beyond the plan, or one missing from it, is a finding (the check fails). Privileges
that cannot be seen (no ``rabbitmqctl``, a broker on another machine, a server that does not
answer) are a warning: nothing is claimed about them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from beds.errors import BedsError, RequestError
from beds.provision.needs import StoreAccount
from beds.provision.plan import installed, provisioner_of, store_needs
from beds.provision.rabbitmq import review_user
from beds.provision.rabbitmqctl import RabbitCtl

if TYPE_CHECKING:
    import pluggy

    from beds.config.model import Config

__all__ = ("Line", "review")


@attrs.frozen
class Line:
    """One thing to fix (``failed``) or that could not be seen (``warning``)."""

    status: Literal["failed", "warning"]
    key: str
    problem: str


def _said(error: BaseException) -> str:
    if isinstance(error, RequestError) and error.details:
        return f"{error}: {', '.join(error.details)}"
    return str(error)


async def review(
    config: Config,
    *,
    ctl: RabbitCtl | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> list[Line]:
    """What ``config``'s node's accounts hold beyond or lack of their plan (empty: nothing).

    Args:
        config: the node's configuration (its role's accounts are reviewed).
        ctl: rabbitmqctl (default: the one on ``PATH``, if any).
        plugin_manager: a ready plugin manager (tests); by default the installed plugins.
    """
    lines: list[Line] = []
    try:
        lines += [
            Line("failed", found.key, found.problem)
            for found in review_user(ctl or RabbitCtl.find(), config)
        ]
    except BedsError as exc:
        lines.append(Line("warning", "amqp.url", f"cannot see the user's permissions: {exc}"))
    try:
        found = installed(config, plugin_manager)
    except BedsError as exc:
        lines.append(Line("warning", "plugins", f"cannot see the stores' accounts: {exc}"))
        return lines
    role = config.node.role
    for connection, needs in store_needs(config, found, role).items():
        key = f"stores.{needs.store}" + (f".databases.{needs.database}" if needs.database else "")
        try:
            provisioner = provisioner_of(config, found, connection)
            account = StoreAccount(
                role=role, user=provisioner.user, grants=provisioner.grants(needs)
            )
            lines += [
                Line("failed", item.key, item.problem) for item in await provisioner.review(account)
            ]
        except BedsError as exc:
            lines.append(Line("warning", key, f"cannot see the account's privileges: {_said(exc)}"))
    return lines
