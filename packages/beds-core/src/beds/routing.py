"""Routing keys: how a request finds the broker that serves it.

A request is published on the events exchange with the routing key ``"{template}.{class}"``,
where the class is ``read`` (fetch, ticket, ping), ``write`` (create, update, delete) or
``meta`` (submit). Clients therefore need no knowledge of stores; brokers bind patterns such as
``*.read`` (every template) or ``spew_session.*`` (one template, for a dedicated node).
The node's own admin templates (``beds_lineage``) use the class ``admin`` whatever the
operation, so only admin brokers (``*.admin``) receive them.
"""

from __future__ import annotations

from typing import Final

from beds.envelopes import Operation
from beds.lineage import LINEAGE_TEMPLATE

__all__ = ("ADMIN_TEMPLATES", "PING_TEMPLATE", "operation_class", "routing_key")

PING_TEMPLATE: Final = "beds"
"""Template name used by ``ping``, which no store serves."""

ADMIN_TEMPLATES: Final = frozenset({LINEAGE_TEMPLATE})
"""Templates the admin node answers itself (routing class ``admin``)."""

_CLASS: Final = {
    Operation.FETCH: "read",
    Operation.TICKET: "read",
    Operation.PING: "read",
    Operation.CREATE: "write",
    Operation.UPDATE: "write",
    Operation.DELETE: "write",
    Operation.SUBMIT: "meta",
}


def operation_class(operation: Operation) -> str:
    """Return ``read``, ``write`` or ``meta``."""
    return _CLASS[operation]


def routing_key(template: str, operation: Operation) -> str:
    """Return the routing key a request for ``template`` and ``operation`` is published with."""
    if template in ADMIN_TEMPLATES:
        return f"{template}.admin"
    return f"{template}.{_CLASS[operation]}"
