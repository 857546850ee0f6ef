"""Template handlers: a data domain's own Python step for an operation of its template.

Most operations need none: the dispatcher validates the payload and calls the adapter. A domain
whose operation must do more than one store call (hash a password before it is stored, verify
one and issue a token at login) registers a handler for that template and operation through
``beds_register_handlers``. The handler replaces only the store-call step: the request has been
decoded, routed, authenticated and authorized, and the handler's work runs within the request's
deadline, is traced as its database call and answered like any other; it still reaches the
database only through the template's adapter and its declared objects.

A handler's store calls carry no idempotency key (the request's key is not passed on): a
handler makes its own writes safe to repeat (a login makes a new session, a logout revokes
again, a sign-up meets the unique handle), and nothing derived from its payload, which may hold
a password, is stored with a key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from beds.auth.principal import Principal
from beds.envelopes import Operation, Request
from beds.errors import PluginError
from beds.namaste import CallContext, NamasteCore
from beds.templates.model import Template

if TYPE_CHECKING:
    from beds.auth.tokens import SessionTokens
    from beds.config.model import AuthSettings

__all__ = ("Handler", "HandlerCall", "HandlerRegistry", "NodeServices")


class NodeServices(Protocol):
    """What a node lends handlers beyond the template's adapter."""

    @property
    def auth(self) -> AuthSettings:
        """The ``[auth]`` configuration (password hashing, throttling, token lifetimes)."""

    @property
    def tokens(self) -> SessionTokens | None:
        """Issues and verifies BEDS session tokens (``None``: this node has no token keys)."""

    def resolve(self, template: str) -> tuple[Template, NamasteCore]:
        """Another template this node serves, and its adapter (``UnknownTemplate`` if none)."""

    async def revoke(self, data: dict[str, Any]) -> None:
        """Revoke on every node: ``{"sid", "until"}`` or ``{"sub", "before", "until"}``.

        Applied here at once, then published as a control event (:mod:`beds.auth.revocation`).
        """


@attrs.frozen(kw_only=True)
class HandlerCall:
    """One request for a handler: what it asks, who asks, and what serves it."""

    request: Request
    template: Template
    adapter: NamasteCore
    ctx: CallContext
    principal: Principal | None
    services: NodeServices


Handler = Callable[[HandlerCall], Awaitable[Any]]
"""Returns the response's ``data``; raises a :class:`~beds.errors.RequestError` to refuse."""


@attrs.define
class HandlerRegistry:
    """(template, operation) → handler, filled by ``beds_register_handlers``."""

    handlers: dict[tuple[str, Operation], Handler] = attrs.field(factory=dict)

    def add(self, template: str, operation: Operation | str, handler: Handler) -> None:
        """Handle ``operation`` of ``template`` with ``handler``.

        Raises:
            PluginError: another handler is registered for the same template and operation.
        """
        key = (template, Operation(operation))
        if key in self.handlers:
            raise PluginError(
                f"two handlers for {operation} of template {template!r}: "
                f"{_name(self.handlers[key])} and {_name(handler)}"
            )
        self.handlers[key] = handler

    def for_templates(self, names: Mapping[str, object]) -> dict[tuple[str, Operation], Handler]:
        """The handlers of the templates in ``names`` (a node serves only some)."""
        return {key: handler for key, handler in self.handlers.items() if key[0] in names}


def _name(handler: Handler) -> str:
    return f"{getattr(handler, '__module__', '?')}.{getattr(handler, '__qualname__', '?')}"
