"""Checks on the payloads the identity handlers take that no template field describes.

A password is never echoed: a detail names the field and the rule, not the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.errors import ValidationFailed
from beds.values import json_type

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ("MAX_PASSWORD_CHARS", "only", "password")

MAX_PASSWORD_CHARS = 1024
"""Longest password accepted (argon2 takes any length; this bounds the work per attempt)."""


def only(template: str, payload: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse keys the operation does not take.

    Raises:
        ValidationFailed: naming each unknown key.
    """
    known = set(allowed)
    unknown = sorted(set(payload) - known)
    if unknown:
        raise ValidationFailed(
            f"invalid {template} payload",
            details=tuple(
                f"$.payload.{name}: is not accepted here ({', '.join(sorted(known)) or 'none'})"
                for name in unknown
            ),
        )


def password(template: str, payload: Mapping[str, Any], name: str, *, min_length: int) -> str:
    """The password in ``payload[name]``: text of ``min_length`` to 1024 characters.

    Raises:
        ValidationFailed: it is missing, not text, or of the wrong length (value not shown).
    """
    value = payload.get(name)
    if not isinstance(value, str):
        problem = "is required" if value is None else f"must be a string, got {json_type(value)}"
    elif not min_length <= len(value) <= MAX_PASSWORD_CHARS:
        problem = f"must be {min_length} to {MAX_PASSWORD_CHARS} characters"
    else:
        return value
    raise ValidationFailed(f"invalid {template} payload", details=(f"$.payload.{name}: {problem}",))
