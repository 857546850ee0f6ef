"""Properties of the generator over random descriptions (hypothesis).

Valid descriptions give templates the template loader accepts and SQL that beds-rel's splitter
cuts into statements; invalid ones (a valid one with one value replaced by junk, or hostile
names) give a DescriptionError naming a key path, never an exception of another kind.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.generator import DescriptionError, parse_description
from beds.generator.names import name_problem
from beds.generator.package import generate
from beds.templates import parse_template
from beds_rel.schema import split_statements

NAMES = st.from_regex(r"[a-z]{1,8}(_[a-z0-9]{1,6}){0,2}", fullmatch=True).filter(
    lambda n: name_problem(n) is None and n not in ("id", "created_at", "updated_at", "by_key")
)


@st.composite
def fields(draw: st.DrawFn) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in draw(st.lists(NAMES, min_size=1, max_size=6, unique=True)):
        kind = draw(st.sampled_from(["str", "int", "float", "bool", "datetime", "decimal", "json"]))
        spec: dict[str, Any] = {"type": kind}
        if kind == "str":
            high = draw(st.integers(min_value=1, max_value=300))
            spec["max_length"] = high
            spec["min_length"] = draw(st.integers(min_value=0, max_value=high))
        if kind in ("int", "float"):
            low = draw(st.integers(min_value=-1000, max_value=1000))
            spec["minimum"] = low
            spec["maximum"] = low + draw(st.integers(min_value=0, max_value=1000))
        if kind not in ("json",) and draw(st.booleans()):
            spec["required"] = False
            spec["nullable"] = True
        out[name] = spec
    return out


def _indexable(spec: dict[str, Any]) -> bool:
    return bool(spec["type"] != "json" and (spec["type"] != "str" or spec["max_length"] <= 255))


@st.composite
def descriptions(draw: st.DrawFn) -> dict[str, Any]:
    entities: dict[str, Any] = {}
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    tlas = draw(
        st.lists(st.from_regex(r"[a-z]{3}", fullmatch=True), min_size=3, max_size=3, unique=True)
    )
    for name, tla in zip(names, tlas, strict=False):
        declared = draw(fields())
        store = draw(st.sampled_from(["rel", "rec"]))
        usable = [n for n, s in declared.items() if _indexable(s)]
        ordered = [
            n
            for n in usable
            if not declared[n].get("nullable") and declared[n]["type"] in ("str", "int", "float")
        ]
        queries: dict[str, Any] = {}
        for i in range(draw(st.integers(min_value=0, max_value=3))):
            pick = st.lists(st.sampled_from(usable), unique=True, max_size=2)
            query: dict[str, Any] = {"by": draw(pick) if usable else []}
            if draw(st.booleans()) and ordered:
                field = draw(st.sampled_from(ordered))
                query["order_by"] = [draw(st.sampled_from(["", "-"])) + field]
            query["page_size"] = draw(st.integers(min_value=1, max_value=1000))
            queries[f"q{i}"] = query
        capabilities: dict[str, Any] = {
            "audit": draw(st.booleans()),
            "journal": draw(st.booleans()),
            "cache": draw(st.booleans()),
        }
        if draw(st.booleans()):
            capabilities["retention_days"] = draw(st.integers(min_value=1, max_value=36500))
        entity: dict[str, Any] = {
            "store": store,
            "tla": tla,
            "fields": declared,
            "queries": queries,
            "capabilities": capabilities,
        }
        if draw(st.booleans()):
            declared["version"] = {"type": "int"}
            capabilities["locking"] = True
        entities[name] = entity
    return {"domain": {"name": draw(NAMES.filter(lambda n: len(n) <= 24))}, "entities": entities}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descriptions())
def test_random_valid_descriptions_generate_valid_templates_and_sql(data: dict[str, Any]) -> None:
    domain = parse_description(data)
    files = generate(domain)
    for path, content in files.items():
        if "/templates/" in path:
            parse_template(content.decode(), source=path)
        if path.endswith(".sql"):
            statements = split_statements(content.decode())
            assert len(statements) >= 3  # table, view, routines
    assert generate(domain) == files


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descriptions(), st.data())
def test_random_invalid_descriptions_give_a_key_path_error(data: dict[str, Any], draw: Any) -> None:
    path = draw.draw(st.sampled_from(_paths(data)))
    junk = draw.draw(JUNK)
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = junk
    try:
        domain = parse_description(data, source="random.toml")
    except DescriptionError as exc:
        error: DescriptionError | None = exc
    else:
        error = None
        generate(domain)  # it stayed valid: it must generate
    assert error is None or error.file == "random.toml"


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_hostile_field_names_are_refused_unless_safe(name: str) -> None:
    data = {
        "domain": {"name": "hostile"},
        "entities": {"e": {"store": "rel", "tla": "hst", "fields": {name: {"type": "int"}}}},
    }
    key: str | None = None
    try:
        parse_description(data)
    except DescriptionError as exc:
        key = exc.key or "<no key>"
    if key is None:
        assert name_problem(name) is None
    else:
        assert key.startswith("entities.e.fields"), key
