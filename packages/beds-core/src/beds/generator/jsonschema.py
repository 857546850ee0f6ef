"""The JSON Schema (draft 2020-12) of a domain description, for tools that write descriptions.

It states the shape (keys, types, enumerations, limits) so a front end can constrain what it
produces; the rules across keys (a query naming a declared field, ``min_length`` not above
``max_length``, reserved words, TLA clashes) are :func:`beds.generator.parse_description`'s,
which stays the authority: validate with it after the schema.
"""

from __future__ import annotations

from typing import Any

from beds.generator.description import FIELD_TYPES, LIMITS, OPERATIONS, STORES, WHERE_OPS
from beds.generator.names import MAX_NAME

__all__ = ("description_schema",)

_NAME_PATTERN = "^[a-z][a-z0-9_]*$"


def _name(max_length: int = MAX_NAME) -> dict[str, Any]:
    return {"type": "string", "pattern": _NAME_PATTERN, "maxLength": max_length}


def _text() -> dict[str, Any]:
    return {"type": "string", "maxLength": LIMITS["text"]}


def _names(limit: int) -> dict[str, Any]:
    return {"type": "array", "items": _name(), "maxItems": limit, "uniqueItems": True}


def _roles() -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": LIMITS["roles"],
        "items": {"type": "string", "pattern": "^([a-z][a-z0-9_-]{0,62}|\\*|authenticated)$"},
    }


def _field() -> dict[str, Any]:
    length = {"type": "integer", "minimum": 0, "maximum": LIMITS["max_length"]}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type"],
        "properties": {
            "type": {"enum": list(FIELD_TYPES)},
            "required": {"type": "boolean", "default": True},
            "nullable": {"type": "boolean", "default": False},
            "max_length": {**length, "minimum": 1},
            "min_length": length,
            "pattern": {"type": "string", "maxLength": LIMITS["pattern"]},
            "minimum": {"type": "number"},
            "maximum": {"type": "number"},
            "unique": {"type": "boolean", "default": False},
            "references": _name(LIMITS["entity_name"]),
            "example": {},
            "description": _text(),
        },
    }


def _query() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "by": _names(8),
            "where": {
                "type": "object",
                "maxProperties": 8,
                "propertyNames": {"pattern": _NAME_PATTERN, "maxLength": MAX_NAME},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["field", "op"],
                    "properties": {"field": _name(), "op": {"enum": list(WHERE_OPS)}},
                },
            },
            "order_by": {
                "type": "array",
                "maxItems": 4,
                "items": {"type": "string", "pattern": "^-?[a-z][a-z0-9_]*$"},
            },
            "page_size": {"type": "integer", "minimum": 1, "maximum": LIMITS["page_size"]},
            "principal": _name(),
            "description": _text(),
        },
    }


def _entity() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["store", "tla", "fields"],
        "properties": {
            "store": {"enum": list(STORES)},
            "tla": {"type": "string", "pattern": "^[a-z]{3}$"},
            "description": _text(),
            "key": {**_names(4), "minItems": 1},
            "operations": {
                "type": "array",
                "items": {"enum": list(OPERATIONS)},
                "uniqueItems": True,
                "contains": {"const": "create"},
            },
            "fields": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": LIMITS["fields"],
                "propertyNames": {"pattern": _NAME_PATTERN, "maxLength": MAX_NAME},
                "additionalProperties": _field(),
            },
            "queries": {
                "type": "object",
                "maxProperties": LIMITS["queries"],
                "propertyNames": {"pattern": _NAME_PATTERN, "maxLength": MAX_NAME},
                "additionalProperties": _query(),
            },
            "capabilities": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "audit": {"type": "boolean"},
                    "journal": {"type": "boolean"},
                    "locking": {"type": "boolean"},
                    "version_field": _name(),
                    "cache": {"type": "boolean"},
                    "cache_ttl": {"type": "integer", "minimum": 1, "maximum": 86400},
                    "retention_days": {"type": "integer", "minimum": 1, "maximum": 36500},
                },
            },
            "access": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    **{k: _roles() for k in ("create", "update", "delete", "fetch", "submit")},
                    "owner": _name(),
                },
            },
            "long_operations": {
                "type": "object",
                "maxProperties": LIMITS["long_operations"],
                "propertyNames": {"pattern": _NAME_PATTERN, "maxLength": 24},
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["count_by"],
                    "properties": {
                        "count_by": _name(),
                        "steps": {"type": "integer", "minimum": 1, "maximum": LIMITS["steps"]},
                        "description": _text(),
                    },
                },
            },
        },
    }


def description_schema() -> dict[str, Any]:
    """The JSON Schema of a domain description (the TOML document as JSON data)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://beds.invalid/schemas/domain-description.json",
        "title": "BEDS domain description",
        "type": "object",
        "additionalProperties": False,
        "required": ["domain", "entities"],
        "properties": {
            "domain": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": _name(LIMITS["domain_name"]),
                    "description": _text(),
                    "version": {"type": "string", "pattern": "^\\d{1,4}\\.\\d{1,4}\\.\\d{1,4}$"},
                },
            },
            "entities": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": LIMITS["entities"],
                "propertyNames": {"pattern": _NAME_PATTERN, "maxLength": LIMITS["entity_name"]},
                "additionalProperties": _entity(),
            },
        },
    }
