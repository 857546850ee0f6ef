"""The route check: a request runs only on a broker bound to its own routing key.

Per-class queues, prefetch, permissions and access rules all rely on a write never running on
a read broker, whatever key or queue a sender used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds.errors import MalformedRequest, UnsupportedOperation
from beds.routing import Bindings, routing_key

if TYPE_CHECKING:
    from beds.envelopes import Request

__all__ = ("check_route",)


def check_route(request: Request, route: str, bindings: Bindings | None) -> None:
    """Refuse a request whose routing key is not its own, or not one the broker serves.

    Args:
        request: the decoded request.
        route: the routing key it travelled with.
        bindings: the keys the broker is bound to (``None``: any, when embedded).

    Raises:
        MalformedRequest: no key, or a key of another template (BEDS-400).
        UnsupportedOperation: a key of another class, or one this broker does not serve
            (BEDS-405).
    """
    expected = routing_key(request.template, request.operation)
    if route != expected:
        if not route:
            raise MalformedRequest(
                "the request has no routing key; publish it on the events exchange",
                details=(f"expected routing key {expected!r}",),
            )
        template = route.rpartition(".")[0]
        if template != request.template:
            raise MalformedRequest(
                "the routing key names another template than the body",
                details=(f"routing key {route!r}, expected {expected!r}",),
            )
        raise UnsupportedOperation(
            f"{request.operation.value} does not belong to the routing class of the key",
            details=(f"routing key {route!r}, expected {expected!r}",),
        )
    if bindings is not None and not bindings.route(route):
        raise UnsupportedOperation(
            "this broker does not serve the request's routing key",
            details=(
                f"routing key {route!r}; this broker is bound to "
                f"{', '.join(bindings.patterns) or 'nothing'}",
            ),
        )
