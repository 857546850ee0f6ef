"""check_answer on open-ended answers: a description or a DescriptionError, nothing else."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.generator import DescriptionError, parse_description
from beds_ai.describe import Described, check_answer
from beds_ai.prompt import EXAMPLE

VALID: dict[str, Any] = json.loads(
    json.loads((Path(__file__).parent / "replies" / "valid.json").read_text())["body"]["choices"][
        0
    ]["message"]["content"]
)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)


def _outcome(text: str) -> Described | DescriptionError:
    try:
        return check_answer(text)
    except DescriptionError as exc:
        return exc


def test_the_prompts_example_is_a_valid_description() -> None:
    assert parse_description(EXAMPLE).name == "notes"


def test_nulls_mean_not_given() -> None:
    answer = copy.deepcopy(VALID)
    answer["domain"]["version"] = None
    answer["entities"]["book"]["fields"]["title"]["description"] = None
    described = check_answer(json.dumps(answer))
    assert "version" not in described.data["domain"]
    assert described.domain.version == "0.1.0"


def test_deep_nesting_is_refused() -> None:
    answer = copy.deepcopy(VALID)
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    answer["entities"]["book"]["fields"]["title"]["example"] = deep
    with pytest.raises(DescriptionError, match="nested too deeply"):
        check_answer(json.dumps(answer))


@pytest.mark.parametrize("answer", ["[]", "42", '"text"', "null", "{", "", "```\n```"])
def test_not_an_object(answer: str) -> None:
    with pytest.raises(DescriptionError):
        check_answer(answer)


@given(_JSON)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_json_is_a_description_or_a_description_error(value: Any) -> None:
    try:
        text = json.dumps(value)
    except ValueError:  # NaN/inf are not JSON
        return
    _outcome(text)  # raises anything but a DescriptionError


@given(st.text(max_size=200))
def test_any_text_is_a_description_error(text: str) -> None:
    with pytest.raises(DescriptionError):
        check_answer(text)


_PATHS = [
    ("domain", "name"),
    ("domain", "version"),
    ("entities", "book", "tla"),
    ("entities", "book", "store"),
    ("entities", "book", "fields", "title", "type"),
    ("entities", "book", "fields", "title", "max_length"),
    ("entities", "book", "fields", "published", "minimum"),
    ("entities", "book", "queries", "by_title", "by"),
    ("entities", "loan", "fields", "book", "references"),
    ("entities", "loan", "queries", "by_member", "order_by"),
]


@given(st.sampled_from(_PATHS), _JSON)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_a_valid_answer_with_one_value_changed(path: tuple[str, ...], value: Any) -> None:
    answer = copy.deepcopy(VALID)
    table = answer
    for key in path[:-1]:
        table = table[key]
    table[path[-1]] = value
    try:
        text = json.dumps(answer)
    except ValueError:
        return
    outcome = _outcome(text)
    if isinstance(outcome, DescriptionError):
        # A problem inside the description names its key path.
        assert outcome.key is None or outcome.key.split(".")[0] in ("domain", "entities")
    else:
        assert parse_description(outcome.toml) == outcome.domain
