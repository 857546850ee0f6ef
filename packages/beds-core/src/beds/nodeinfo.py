"""What a node tells others about itself: its identity, its start-up checklist, a failed start.

These are plain values, kept low in the layers (docs/architecture.md, "Layers and the modules
that own them") so that the hook specifications, the plugin manager and the CLI can name them
without importing the node runtime. :mod:`beds.node` produces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from beds.errors import BedsError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ("Check", "NodeInfo", "StartupError")


@attrs.frozen(kw_only=True)
class NodeInfo:
    """What plugins are told about the node (lifecycle hooks)."""

    name: str
    role: str
    env: str
    templates: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Check:
    """One line of the IPL checklist."""

    name: str
    status: Literal["ok", "warning", "failed"]
    detail: str = ""
    error: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    """The exception of a failed step, if any (a ``ConfigError`` makes the ``beds`` CLI exit 2)."""


class StartupError(BedsError):
    """IPL stopped at a fatal check.

    Attributes:
        checks: the checklist up to and including the failure.
    """

    def __init__(self, message: str, checks: Sequence[Check]) -> None:
        self.checks = tuple(checks)
        super().__init__(message)


# Exported by ``beds`` (``beds.StartupError``), so tracebacks and pickles name it there, like
# the errors of beds.errors.
StartupError.__module__ = "beds"
