"""A REC adapter whose client reports every command it sends (for counting round trips)."""

from __future__ import annotations

from typing import Any

from pymongo import monitoring

from beds.namaste import StoreSettings
from beds_rec import RecAdapter


class Commands(monitoring.CommandListener):
    """Every command a client sends, in order: ``(name, the command document)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None

    def named(self) -> list[tuple[str, str]]:
        """``(name, collection)`` of each command (the collection as the command names it)."""
        return [(name, str(command.get(name))) for name, command in self.sent]

    def clear(self) -> None:
        self.sent.clear()


class Listened(RecAdapter):
    """The REC adapter, with a command listener on its client (``commands``)."""

    def __init__(self, settings: StoreSettings) -> None:
        super().__init__(settings)
        self.commands = Commands()

    def _client_options(self) -> dict[str, Any]:
        return {**super()._client_options(), "event_listeners": [self.commands]}
