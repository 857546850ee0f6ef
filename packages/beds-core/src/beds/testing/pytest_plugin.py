"""pytest fixtures for BEDS and plugin authors (registered through the ``pytest11`` entry point).

* ``beds_plugin_manager``: a fresh plugin manager that loaded no entry points; register the
  plugin under test on it, so tests do not depend on what else is installed.
* ``beds_template_registry``: an empty :class:`~beds.registry.TemplateRegistry`.
* ``beds_memory_adapter``: an in-memory store for unit tests (never for integration tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from beds.plugins import make_plugin_manager
from beds.registry import TemplateRegistry
from beds.testing.memory import MemoryAdapter

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pluggy


@pytest.fixture
def beds_plugin_manager() -> Iterator[pluggy.PluginManager]:
    """A plugin manager with the BEDS hook specs and no plugins; emptied after the test."""
    pm = make_plugin_manager(load_entry_points=False)
    yield pm
    for plugin in list(pm.get_plugins()):
        pm.unregister(plugin)


@pytest.fixture
def beds_template_registry() -> TemplateRegistry:
    """An empty template registry."""
    return TemplateRegistry()


@pytest.fixture
def beds_memory_adapter() -> MemoryAdapter:
    """An in-memory NamasteCore serving the store ``memory``."""
    return MemoryAdapter("memory")
