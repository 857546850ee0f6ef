"""Fixtures for the beds-core unit tests: no network, no services, no entry-point loading.

Plugin tests use ``beds_plugin_manager`` from BEDS's own pytest plugin (``beds.testing``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from beds.registry import TemplateRegistry
from beds.templates import Template, parse_template

# A template that uses every field type and option, so validation tests need nothing else.
DEMO_DECLARATION: dict[str, Any] = {
    "name": "demo_item",
    "store": "memory",
    "tla": "dmi",
    "description": "Every field type and option, for tests.",
    "key": ["id"],
    "default_query": "by_title",
    "fields": {
        "id": {"type": "int", "generated": True},
        "title": {"type": "str", "min_length": 2, "max_length": 10, "pattern": "[a-z]+"},
        "count": {"type": "int", "minimum": 0, "maximum": 10},
        "active": {"type": "bool"},
        "ratio": {"type": "float", "required": False, "nullable": True, "minimum": 0, "maximum": 1},
        "due": {"type": "datetime", "required": False, "nullable": True},
        "price": {"type": "decimal", "required": False, "nullable": True},
        "created_at": {"type": "datetime", "generated": True},
    },
    "operations": {
        "create": {
            "params": ["title", "count", "active", "ratio", "due", "price"],
            "returns": ["id", "created_at"],
            "procedure": "dmi_create",
        },
        "update": {"params": ["id", "title", "count", "active", "ratio", "due", "price"]},
        "delete": {"params": ["id"]},
    },
    "queries": {
        "by_count": {"params": ["count"], "max_limit": 20},
        "by_title": {"params": ["title"], "max_limit": 5, "view": "dmi_by_title_v"},
        "by_id": {"params": ["id"], "max_limit": 1},
        "recent": {
            "params": ["since"],
            "where": {"since": {"field": "created_at", "op": "gte"}},
            "order_by": ["-created_at", "id"],
            "max_limit": 10,
        },
    },
    "capabilities": {"audit": True, "journal": True},
    "access": {"create": ["member"], "fetch": ["*"]},
    "memory": {"table": "dmi_items"},
}


def demo_text(declaration: dict[str, Any] | None = None) -> str:
    """Return a declaration (default: the demo template) as TOML text."""
    return tomlkit.dumps(DEMO_DECLARATION if declaration is None else declaration)


@pytest.fixture
def demo_declaration() -> dict[str, Any]:
    """A fresh, mutable copy of the demo declaration."""
    return copy.deepcopy(DEMO_DECLARATION)


@pytest.fixture(scope="session")
def demo_template() -> Template:
    """The demo declaration, parsed."""
    return parse_template(demo_text(), source="demo.toml")


SPEW_TEMPLATES = (
    Path(__file__).parents[2] / "beds-templates-example/src/beds_templates_example/templates"
)


@pytest.fixture(scope="session")
def spew_templates() -> dict[str, Template]:
    """The two real SPEW templates, read from the repository's example package by path.

    beds-core's unit tests run with only beds-core installed, so the package is not imported.
    """
    registry = TemplateRegistry()
    for path in sorted(SPEW_TEMPLATES.glob("*.toml")):
        registry.add_text(path.read_text(encoding="utf-8"), source=path.name)
    return registry.templates
