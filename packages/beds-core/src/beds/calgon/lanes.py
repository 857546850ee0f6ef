"""Ticket lanes: which workers run which tickets.

Every ticket is recorded on a lane, and a worker claims only the tickets of the lane it serves
(:meth:`beds.calgon.tickets.TicketStore.claim_ticket`). Two lanes exist:

* ``default``: every long operation a caller submits. Nodes whose role has the
  ``calgon.broker`` broker (the seed ``appServer``'s ``mBroker``) run ``calgon.workers`` of them.
* ``warehouse``: the retention sweeps (operation ``retention``, whether the scheduler recorded it
  or an admin submitted it). ``type = "tickets"`` brokers with ``lane = "warehouse"`` (the seed
  ``segundo``'s ``whBroker``) run ``instances`` of them, so a sweep of millions of records never
  takes a worker the appServer's submits wait for.

A role whose ``tickets`` brokers serve a lane runs the long operations of that lane for every
template that has one (:func:`lane_templates`), whatever its request bindings route: the node
prepares those templates and its store account is granted their long operations' objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds.calgon.tickets import DEFAULT_LANE, lane_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.config.model import Config
    from beds.templates.model import Template

__all__ = ("lane_of", "lane_templates", "node_lanes")  # lane_of: beds.calgon.tickets


def node_lanes(config: Config, role: str | None = None) -> dict[str, int]:
    """The lanes a node of ``role`` (default: this node's) runs tickets of, and how many at once.

    ``default`` with ``calgon.workers`` when the role has the ``calgon.broker`` broker, plus
    each ``tickets`` broker's lane with its ``instances`` (two brokers of one lane add up).
    A lane with no worker is absent.
    """
    brokers = config.roles[role or config.node.role].brokers
    calgon = config.calgon
    lanes: dict[str, int] = {}
    if calgon.broker in brokers and brokers[calgon.broker].consumes and calgon.workers:
        lanes[DEFAULT_LANE] = calgon.workers
    for settings in brokers.values():
        if not settings.consumes:
            lanes[settings.lane] = lanes.get(settings.lane, 0) + settings.instances
    return lanes


def lane_templates(
    config: Config, templates: Mapping[str, Template], role: str | None = None
) -> dict[str, Template]:
    """The templates whose tickets the ``tickets`` brokers of ``role`` run, by name.

    Those with a long operation on one of those brokers' lanes (``warehouse``: the templates
    with retention). The default-lane workers of ``calgon.broker`` are not counted: they run
    the long operations of the templates the role serves anyway.
    """
    brokers = config.roles[role or config.node.role].brokers
    lanes = {settings.lane for settings in brokers.values() if not settings.consumes}
    return {
        name: template
        for name, template in sorted(templates.items())
        if any(lane_of(operation) in lanes for operation in template.long_operations)
    }
