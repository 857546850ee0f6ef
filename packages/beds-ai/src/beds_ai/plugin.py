"""beds-ai's plugin: implements ``beds_describe_domain`` when ``BEDS_AI_URL`` is set.

Unconfigured, it answers ``None`` so another plugin, or the ``beds describe-domain`` command's
own message, takes over. It registers nothing a node uses: a serving node never calls it.
"""

from __future__ import annotations

import os
from typing import Any

from beds import hookimpl

__all__ = ("BEDS_HOOK_API", "beds_describe_domain", "installed_templates")

BEDS_HOOK_API = 1


def installed_templates() -> list[tuple[str, str, str]]:
    """``(template, tla, distribution)`` of every template an installed package registers.

    A package that fails to load is skipped (development mode): the check is about clashes
    with what can be served, and the command must not fail on another package's bug.
    """
    from beds.plugins import Hooks, make_plugin_manager

    registry = Hooks(make_plugin_manager(strict=False)).register_templates()
    return [(t.name, t.tla, t.distribution) for _, t in sorted(registry.templates.items())]


@hookimpl
def beds_describe_domain(text: str) -> dict[str, Any] | None:
    """The description beds-ai's endpoint writes for ``text``, or ``None`` if unconfigured.

    Raises:
        ConfigError: a ``BEDS_AI_*`` variable is invalid.
        AiError: the endpoint failed, or its answers were refused twice.
    """
    # Imported here: a serving node loads this module and never calls the hook.
    from beds_ai.describe import describe_domain
    from beds_ai.settings import settings_from_env

    settings = settings_from_env(os.environ)
    if settings is None:
        return None
    return describe_domain(text, settings, installed=installed_templates()).data
