"""A small deterministic TOML writer: the generator's templates, byte for byte the same each run.

It writes what templates hold: strings, integers, floats, booleans, arrays, inline tables inside
arrays or under ``where``, and nested tables as ``[a.b]`` headers, in insertion order.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ("dumps",)

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("TOML floats are finite here")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes (\uXXXX included).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) and not getattr(value, "inline", False)


def dumps(data: Mapping[str, Any], *, comments: Mapping[str, str] | None = None) -> str:
    """``data`` as TOML text; ``comments`` puts ``# text`` lines above the named tables."""
    lines: list[str] = []
    _table(data, (), lines, comments or {})
    return "\n".join(lines).rstrip("\n") + "\n"


class Inline(dict[str, Any]):
    """A table written inline (``{ field = "created_at", op = "gte" }``)."""

    inline = True


def _table(
    data: Mapping[str, Any], path: tuple[str, ...], lines: list[str], comments: Mapping[str, str]
) -> None:
    scalars = [(k, v) for k, v in data.items() if not _is_table(v)]
    tables = [(k, v) for k, v in data.items() if _is_table(v)]
    header = ".".join(_key(p) for p in path)
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        for line in comments.get(header, "").splitlines():
            lines.append(f"# {line}".rstrip())
        lines.append(f"[{header}]")
    for key, value in scalars:
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in tables:
        _table(value, (*path, key), lines, comments)
