"""A natural-language description in, a checked domain description out, or a clear error.

One round asks the model; its answer goes through the same validation as a hand-written
``description.toml`` (:func:`beds.generator.parse_description`, and the clashes with installed
templates that ``beds new-domain`` refuses). A refused answer gets exactly one repair round, in
which the model sees the problem; a second refusal is an
:class:`~beds_ai.errors.AiAnswerInvalid` that names both problems. What is
returned is also what the reviewer reads: :func:`description_toml` writes it, and that text is
parsed again before it is returned, so the file is exactly the description that was checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

from beds.generator import DescriptionError, description_schema, parse_description
from beds.generator.description import LIMITS, check_installed
from beds.generator.model import Domain
from beds.generator.names import name_problem
from beds.generator.toml import dumps
from beds_ai.client import ChatClient
from beds_ai.errors import AiAnswerInvalid, AiError, redact
from beds_ai.prompt import first_messages, repair_message

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import httpx

    from beds_ai.settings import AiSettings

__all__ = ("MAX_TEXT", "Described", "check_answer", "describe_domain", "description_toml")

MAX_TEXT = 20_000
"""Longest natural-language description sent to the model, in characters."""
_SHOWN_PROBLEM = 1000
"""Longest problem kept and shown (a key path of hostile names can be long)."""
_MAX_DEPTH = 16
"""Deepest nesting an answer may have; a description needs five levels, an example a few more."""


@attrs.frozen
class Described:
    """A checked description: the data, its TOML text and the parsed domain."""

    data: dict[str, Any]
    toml: str
    domain: Domain


def _strip_fence(text: str) -> str:
    """The JSON inside one Markdown code fence, which models add in ``json_object`` mode."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and stripped.count("```") == 2:
        stripped = stripped[3:-3]
        first, _, rest = stripped.partition("\n")
        return rest if first.strip() in ("", "json", "JSON") else stripped
    return stripped


def _without_nulls(value: Any, depth: int, source: str, path: str) -> Any:
    """``value`` without null members (null means not given; TOML has no null)."""
    if depth > _MAX_DEPTH:
        raise DescriptionError(f"{path or 'the answer'} is nested too deeply", file=source)
    if isinstance(value, dict):
        return {
            key: _without_nulls(item, depth + 1, source, f"{path}.{key}".lstrip("."))
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, list):
        return [
            _without_nulls(item, depth + 1, source, f"{path}[{i}]") for i, item in enumerate(value)
        ]
    return value


def description_toml(data: Mapping[str, Any]) -> str:
    """The description as the TOML a reviewer reads and ``beds new-domain --from`` takes."""
    return dumps(data)


def check_answer(
    answer: str,
    *,
    source: str = "<answer>",
    name: str | None = None,
    installed: Iterable[tuple[str, str, str]] = (),
) -> Described:
    """Check one answer: JSON, no larger than a description may be, a valid description.

    Args:
        answer: the model's text.
        source: names the answer in errors (``AI answer 1``).
        name: the domain's name the user chose; it replaces the model's.
        installed: ``(template, tla, distribution)`` of the installed templates, which the
            description's templates and TLAs must not clash with (``beds new-domain``'s rule:
            the package a description made before may keep its own).

    Raises:
        DescriptionError: the first problem, with the key path when there is one.
    """
    if len(answer.encode("utf-8", "surrogatepass")) > LIMITS["bytes"]:
        raise DescriptionError(f"is larger than {LIMITS['bytes']} bytes", file=source)
    text = _strip_fence(answer)
    if not text:
        raise DescriptionError("is empty: expected one JSON object", file=source)
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DescriptionError(f"is not JSON ({exc})", file=source) from None
    if not isinstance(data, dict):
        raise DescriptionError(f"must be one JSON object, not {type(data).__name__}", file=source)
    data = _without_nulls(data, 0, source, "")
    if name is not None and isinstance(data.get("domain"), dict):
        data["domain"]["name"] = name
    domain = parse_description(data, source=source)
    check_installed(domain, installed)
    try:
        toml = description_toml(data)
    except (TypeError, ValueError) as exc:
        raise DescriptionError(f"holds a value TOML cannot hold ({exc})", file=source) from None
    # The reviewed file must be the checked description: parse what will be written.
    domain = parse_description(toml, source=source)
    return Described(data=data, toml=toml, domain=domain)


def describe_domain(
    text: str,
    settings: AiSettings,
    *,
    name: str | None = None,
    installed: Iterable[tuple[str, str, str]] = (),
    transport: httpx.BaseTransport | None = None,
) -> Described:
    """Ask the model for a description of ``text``; one repair round if it is refused.

    Args:
        text: the domain in the user's words.
        settings: the endpoint, model and key.
        name: the domain's name, when the user chose it.
        installed: ``(template, tla, distribution)`` of the installed templates.
        transport: an httpx transport instead of the network.

    Raises:
        AiError: ``text`` is empty or too long.
        AiUnavailable: the endpoint could not be reached or refused the call.
        AiAnswerInvalid: both answers were refused; names each problem.
    """
    if not text.strip():
        raise AiError("the domain's description is empty: say what the domain holds")
    if len(text) > MAX_TEXT:
        raise AiError(f"the domain's description is longer than {MAX_TEXT} characters")
    problem = None if name is None else name_problem(name, max_length=LIMITS["domain_name"])
    if problem:
        raise AiError(f"the domain's name {name!r} {problem}")
    schema = description_schema()
    messages = first_messages(text, schema, name)
    problems: list[str] = []
    with ChatClient(settings, transport=transport) as client:
        for round_ in (1, 2):
            answer = client.complete(messages, schema)
            try:
                return check_answer(
                    answer, source=f"AI answer {round_}", name=name, installed=installed
                )
            except DescriptionError as exc:
                # Say which answer it was, also for a problem no file is named for.
                problem = str(exc) if exc.file else f"AI answer {round_}: {exc}"
                problems.append(redact(problem, settings.key, _SHOWN_PROBLEM))
                if round_ == 1:
                    messages += repair_message(answer, problems[-1])
    raise AiAnswerInvalid(
        "the model's answer is not a valid description, even after one repair round: "
        + "; then ".join(problems),
        problems=tuple(problems),
    )
