"""Routing keys: how a request finds the broker that serves it.

A request is published on the events exchange with the routing key ``"{template}.{class}"``,
where the class is ``read`` (fetch, fetch_many, ticket, ping), ``write`` (create, update,
delete and their ``_many`` batches) or ``meta`` (submit). Clients therefore need no knowledge
of stores; brokers bind patterns such as ``*.read`` (every template) or ``spew_session.*`` (one
template, for a dedicated node).
The node's own admin templates (``beds_lineage``, ``beds_operator``) use the class ``admin``
whatever the operation, so only admin brokers (``*.admin``) receive them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from beds.envelopes import Operation
from beds.lineage import LINEAGE_TEMPLATE

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = (
    "ADMIN_TEMPLATES",
    "OPERATOR_TEMPLATE",
    "PING_TEMPLATE",
    "Bindings",
    "operation_class",
    "routing_key",
    "topic_matches",
)

PING_TEMPLATE: Final = "beds"
"""Template name used by ``ping``, which no store serves."""

OPERATOR_TEMPLATE: Final = "beds_operator"
"""The admin node's template for operator commands (:mod:`beds.broker.operator`)."""

ADMIN_TEMPLATES: Final = frozenset({LINEAGE_TEMPLATE, OPERATOR_TEMPLATE})
"""Templates the admin node answers itself (routing class ``admin``)."""

_CLASS: Final = {
    Operation.FETCH: "read",
    Operation.TICKET: "read",
    Operation.PING: "read",
    Operation.CREATE: "write",
    Operation.UPDATE: "write",
    Operation.DELETE: "write",
    Operation.SUBMIT: "meta",
    Operation.FETCH_MANY: "read",
    Operation.CREATE_MANY: "write",
    Operation.UPDATE_MANY: "write",
    Operation.DELETE_MANY: "write",
}


def operation_class(operation: Operation) -> str:
    """Return ``read``, ``write`` or ``meta``."""
    return _CLASS[operation]


def routing_key(template: str, operation: Operation) -> str:
    """Return the routing key a request for ``template`` and ``operation`` is published with."""
    if template in ADMIN_TEMPLATES:
        return f"{template}.admin"
    return f"{template}.{_CLASS[operation]}"


def topic_matches(pattern: str, key: str) -> bool:
    """Whether a topic-exchange binding ``pattern`` routes ``key`` (RabbitMQ's rule).

    Words are separated by ``.``; ``*`` stands for exactly one word, ``#`` for zero or more.
    """
    return _match(pattern.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[skip:]) for skip in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


class Bindings:
    """The routing-key patterns a broker's queue is bound with, and the keys they route.

    A request is only served by a broker whose bindings route the key it travelled with, so a
    write published straight to a read broker's queue (default exchange, forged
    ``x-beds-routing-key``) is refused like one published with the wrong key.
    """

    _CACHE_SIZE: Final = 1024

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        self._seen: dict[str, bool] = {}

    def route(self, key: str) -> bool:
        """Whether one of the patterns routes ``key`` (remembered: keys repeat)."""
        known = self._seen.get(key)
        if known is None:
            known = any(topic_matches(pattern, key) for pattern in self.patterns)
            if len(self._seen) < self._CACHE_SIZE:
                self._seen[key] = known
        return known
