"""Registers the identity templates, their schema, and their handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds import hookimpl
from beds_identity.passwords import Passwords
from beds_identity.sessions import Sessions
from beds_identity.throttle import Throttle
from beds_identity.users import Users

if TYPE_CHECKING:
    from beds.handlers import Handler, HandlerCall, HandlerRegistry
    from beds.registry import TemplateRegistry

__all__ = ("beds_register_handlers", "beds_register_templates")


@hookimpl
def beds_register_templates(registry: TemplateRegistry) -> None:
    """Add ``templates/*.toml`` and ``schema/rel/*`` from this package."""
    registry.add_package(__package__)


@hookimpl
def beds_register_handlers(registry: HandlerRegistry) -> None:
    """Handle every operation of ``beds_user`` and ``beds_session``.

    The handlers need the node's ``[auth]`` settings, which they read on their first call
    (the hook runs before the node's services exist); each node gets its own failed-login
    counts.
    """
    state = _Lazy()
    for operation in ("create", "fetch", "update", "delete"):
        registry.add("beds_user", operation, state.handler("users", operation))
        registry.add("beds_session", operation, state.handler("sessions", operation))


class _Lazy:
    """Builds the hasher and the throttle from the first call's settings, once per node."""

    def __init__(self) -> None:
        self._built: dict[str, Users | Sessions] = {}

    def _ready(self, call: HandlerCall) -> dict[str, Users | Sessions]:
        if not self._built:
            settings = call.services.auth
            passwords = Passwords(settings.passwords)
            throttle = Throttle(
                attempts=settings.throttle.attempts, window=settings.throttle.window
            )
            self._built = {"users": Users(passwords), "sessions": Sessions(passwords, throttle)}
        return self._built

    def handler(self, kind: str, operation: str) -> Handler:
        async def handle(call: HandlerCall) -> object:
            return await getattr(self._ready(call)[kind], operation)(call)

        handle.__qualname__ = f"{kind}.{operation}"
        return handle
