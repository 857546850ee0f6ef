"""Typed look-ups in a parsed template (TOML) that fail with the source and the key path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beds.errors import TemplateError
from beds.templates.model import FieldSpec, FieldType

__all__ = ("Reader", "binding", "check_fields", "principal_param")


class Reader:
    """Typed look-ups in a parsed TOML document that fail with the key path."""

    def __init__(self, source: str, template: str) -> None:
        """Read the document of ``source``; errors name it and the ``template``."""
        self.source = source
        self.template = template

    def fail(self, path: str, message: str) -> TemplateError:
        """The error for the value at ``path``: ``{source}: {path} {message}``."""
        return TemplateError(f"{self.source}: {path} {message}", template=self.template)

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        """The table at ``key`` (empty when absent)."""
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(path, "must be a table")
        return value

    def string(
        self, data: Mapping[str, Any], key: str, path: str, default: str | None = None
    ) -> str:
        """The string at ``key``; ``default`` when absent (``None``: required)."""
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.fail(path, "must be a string" if key in data else "is required")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        """The boolean at ``key``, or ``default``."""
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value

    def positive(self, data: Mapping[str, Any], key: str, path: str) -> int | None:
        """The non-negative integer at ``key``, or ``None``."""
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(path, "must be a non-negative integer")
        return value

    def number(self, data: Mapping[str, Any], key: str, path: str) -> float | None:
        """The number at ``key``, or ``None``."""
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, "must be a number")
        return float(value)

    def names(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        """The list of strings at ``key`` (empty when absent)."""
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(path, "must be a list of strings")
        return tuple(value)


def check_fields(
    r: Reader, names: tuple[str, ...], fields: Mapping[str, FieldSpec], path: str
) -> None:
    """Refuse names at ``path`` that are not declared fields, or that repeat."""
    for name in names:
        if name not in fields:
            raise r.fail(path, f"names {name!r}, which is not a declared field")
    if len(set(names)) != len(names):
        raise r.fail(path, "lists a field twice")


def principal_param(
    r: Reader,
    raw: Mapping[str, Any],
    params: tuple[str, ...],
    fields: Mapping[str, FieldSpec],
    path: str,
) -> str | None:
    """``principal = "param"``: the param the authenticated principal's handle is bound to."""
    name = raw.get("principal")
    if name is None:
        return None
    if not isinstance(name, str) or name not in params:
        raise r.fail(f"{path}.principal", "must name one of the params")
    if fields[name].type is not FieldType.STR:
        raise r.fail(f"{path}.principal", f"names {name!r}, which is not a str field")
    return name


def binding(raw: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """The keys of ``raw`` BEDS does not read: the store's declarations, for its adapter."""
    return {k: v for k, v in raw.items() if k not in known}
