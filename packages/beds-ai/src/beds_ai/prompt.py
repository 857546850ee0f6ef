"""The messages sent to the model: the task, the schema, the user's words, and the repair round.

The model is told to write only the description. It never writes SQL, templates or code: the
deterministic generator writes every database object from the description, so what reaches the
DBA is reviewable and the same description always gives the same objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("EXAMPLE", "MAX_REPAIR_ECHO", "first_messages", "repair_message")

MAX_REPAIR_ECHO = 16 * 1024
"""How much of a refused answer is sent back in the repair round (a huge one is cut)."""

EXAMPLE: Mapping[str, Any] = {
    "domain": {"name": "notes", "description": "Personal notes."},
    "entities": {
        "note": {
            "store": "rel",
            "tla": "nte",
            "description": "A note a user wrote.",
            "fields": {
                "owner": {"type": "str", "max_length": 64, "description": "Who wrote it."},
                "title": {"type": "str", "max_length": 200},
                "body": {"type": "str", "required": False, "nullable": True},
            },
            "queries": {"by_owner": {"by": ["owner"], "order_by": ["-created_at"]}},
            "access": {"create": ["authenticated"], "fetch": ["authenticated"], "owner": "owner"},
        }
    },
}
"""A small valid description, shown to the model as the shape to follow."""

_SYSTEM = """\
You turn a description of a data domain, written by a person, into a BEDS domain description:
one JSON object following the JSON Schema below. Answer with that JSON object only: no prose,
no Markdown fence.

Rules:
- Names (domain, entities, fields, queries) are lower_snake_case ASCII, start with a letter, and
  are not SQL reserved words (order, group, key, desc, status is fine), Python keywords or the
  names id, created_at, updated_at (the generator adds those to every entity).
- Each entity has a store ("rel" for MariaDB tables, "rec" for MongoDB collections), a TLA of
  three lower-case letters unique in the domain, and at least one field.
- Field types: str, int, float, bool, datetime, decimal, json. A str field that is unique,
  referenced, queried, sorted or counted by declares max_length of at most 255.
- A reference (references = "<entity>") points at another entity of this description and has
  the type of that entity's key (int for a "rel" entity's id, str for a "rec" entity's id).
- A field that may be missing has required = false and nullable = true.
- Locking needs a version field: declare fields.version with type int.
- Write only the description. Never write SQL, code or templates: BEDS generates them.
"""


def first_messages(
    text: str, schema: Mapping[str, Any], name: str | None = None
) -> list[dict[str, str]]:
    """The system and user messages of the first round.

    Args:
        text: the user's description of the domain.
        schema: the description's JSON Schema (in the prompt too: an endpoint without
            structured outputs only sees it there).
        name: the domain's name when the user chose it.
    """
    system = (
        _SYSTEM
        + "\nJSON Schema of the answer:\n"
        + orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        + "\n\nExample of a valid answer:\n"
        + orjson.dumps(EXAMPLE).decode()
    )
    user = text if name is None else f"{text}\n\nThe domain's name is {name!r}."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def repair_message(answer: str, problem: str) -> list[dict[str, str]]:
    """The refused answer and what was wrong with it, to append for the one repair round."""
    shown = answer if len(answer) <= MAX_REPAIR_ECHO else answer[:MAX_REPAIR_ECHO] + " …(cut)"
    return [
        {"role": "assistant", "content": shown},
        {
            "role": "user",
            "content": (
                "That answer was refused by the description's validation:\n"
                f"{problem}\n"
                "Answer again with the whole corrected description, as one JSON object only."
            ),
        },
    ]
