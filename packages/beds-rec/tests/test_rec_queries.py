"""Declared queries as MongoDB filters and sorts, locked templates' plans, journal positions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest
import tomlkit
from bson.objectid import ObjectId

from beds.errors import MalformedRequest, TemplateError, ValidationFailed
from beds.namaste import Query
from beds.templates.loader import parse_template
from beds.templates.model import Template
from beds.templates.validate import validate_fetch
from beds_rec.bindings import plan_template
from beds_rec.idempotency import UPDATES_FIELD, allow_key_field, forbids_key_field
from beds_rec.journal import _position, wire_key
from beds_rec.queries import find_filter, find_sort

NOTE: dict[str, Any] = {
    "name": "rec_note",
    "store": "rec",
    "tla": "rnt",
    "key": ["id"],
    "fields": {
        "id": {"type": "str", "generated": True},
        "author": {"type": "str"},
        "rank": {"type": "int"},
        "version": {"type": "int", "generated": True},
        "created_at": {"type": "datetime", "generated": True},
    },
    "operations": {
        "create": {"params": ["author", "rank"], "returns": ["id", "version"]},
        "update": {"params": ["id", "version", "rank"]},
        "delete": {"params": ["id", "version"]},
    },
    "queries": {
        "by_author": {"params": ["author"], "filter": ["author"], "order_by": ["-rank", "id"]},
        "ranked": {
            "params": ["author", "above", "upto", "authors"],
            "filter": ["author"],
            "where": {
                "above": {"field": "rank", "op": "gt"},
                "upto": {"field": "rank", "op": "lte"},
                "authors": {"field": "author", "op": "in"},
            },
        },
        "picked": {"params": ["ids"], "where": {"ids": {"field": "id", "op": "in"}}},
        "old": {"params": [], "sort": [["rank", -1]]},
    },
    "capabilities": {"locking": True},
    "rec": {"collection": "rnt_notes"},
}
A = "a" * 24
B = "b" * 24


def template(**changes: Any) -> Template:
    return parse_template(tomlkit.dumps({**NOTE, **changes}), source="note.toml")


def query(payload: dict[str, Any], after: tuple[Any, ...] | None = None) -> Query:
    note = template()
    validated = validate_fetch(note, payload)
    return Query(spec=validated.spec, params=validated.params, limit=10, after=after)


def built(payload: dict[str, Any], after: tuple[Any, ...] | None = None) -> dict[str, Any]:
    plan = plan_template(template())
    fetch = query(payload, after)
    return find_filter(plan, plan.queries[fetch.spec.name], fetch)


def test_equality_params_stay_plain_filters() -> None:
    assert built({"query": "by_author", "params": {"author": "ann"}}) == {"author": "ann"}


def test_conditions_become_operators_and_and_with_the_equalities() -> None:
    params = {"author": "ann", "above": 1, "upto": 5, "authors": ["cy", "bob"]}
    assert built({"query": "ranked", "params": params}) == {
        "$and": [
            {"author": "ann"},
            {"rank": {"$gt": 1}},
            {"rank": {"$lte": 5}},
            {"author": {"$in": ["bob", "cy"]}},  # sorted: MongoDB takes $in as a set
        ]
    }


def test_an_in_over_id_converts_each_value_and_names_the_bad_one() -> None:
    assert built({"query": "picked", "params": {"ids": [B, A]}}) == {
        "_id": {"$in": [ObjectId(A), ObjectId(B)]}
    }
    plan = plan_template(template())
    fetch = query({"query": "picked", "params": {"ids": [A]}})
    bad = Query(spec=fetch.spec, params={"ids": [A, "nope"]}, limit=1)
    with pytest.raises(ValidationFailed) as caught:
        find_filter(plan, plan.queries["picked"], bad)
    assert caught.value.details == ("$.payload.params.ids[1]: must be 24 hexadecimal characters",)


def test_a_cursor_is_the_keyset_after_the_last_record_in_each_keys_direction() -> None:
    payload = {"query": "by_author", "params": {"author": "ann"}}
    assert built(payload, after=(3, A)) == {
        "$and": [
            {"author": "ann"},
            {"$or": [{"rank": {"$lt": 3}}, {"rank": 3, "_id": {"$gt": ObjectId(A)}}]},
        ]
    }


def test_the_declared_order_is_the_sort_and_the_old_sort_still_sorts() -> None:
    plan = plan_template(template())
    assert find_sort(plan, plan.queries["by_author"]) == [("rank", -1), ("_id", 1)]
    assert find_sort(plan, plan.queries["old"]) == [("rank", -1)]
    assert find_sort(plan, plan.queries["picked"]) is None
    assert built({"query": "old", "params": {}}) == {}


def test_a_locked_template_generates_its_version_field() -> None:
    plan = plan_template(template())
    assert plan.version_field == "version"
    assert plan.fields == ("id", "author", "rank", "version", "created_at")
    unlocked = template(capabilities={})
    with pytest.raises(TemplateError, match=r"fields\.version is generated"):
        plan_template(unlocked)


def test_the_marker_fields_are_declared_in_a_strict_validator() -> None:
    strict = {"$jsonSchema": {"additionalProperties": False, "properties": {"a": {}}}}
    allowed = allow_key_field(strict, ("_beds_key", UPDATES_FIELD))
    assert allowed is not None
    properties = allowed["$jsonSchema"]["properties"]
    assert properties["_beds_key"] == {"bsonType": "string"}
    assert properties[UPDATES_FIELD] == {"bsonType": "array"}
    assert not forbids_key_field(allowed, UPDATES_FIELD)
    assert allow_key_field(None, (UPDATES_FIELD,)) is None


def test_a_journal_key_is_in_the_templates_key_order_as_wire_values() -> None:
    two = attrs.evolve(template(), key=("author", "created_at"))
    when = dt.datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC)
    key = wire_key(two, {"created_at": when, "author": "ann", "rank": 1})
    assert list(key.items()) == [("author", "ann"), ("created_at", "2030-01-02T03:04:05.006000Z")]


def test_a_history_position_is_an_at_and_an_event_id() -> None:
    when = dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
    assert _position(("2030-01-02T00:00:00Z", "e1")) == (when, "e1")
    assert _position((when.replace(tzinfo=None), "e1")) == (when, "e1")
    for bad in [("yesterday", "e1"), ("2030-01-02T00:00:00Z", 5), ("2030-01-02",)]:
        with pytest.raises(MalformedRequest):
            _position(bad)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        (
            {"params": ["author"], "filter": ["author"], "order_by": ["id"], "sort": [["id", 1]]},
            "queries.bad.sort and queries.bad.order_by are both declared",
        ),
        (
            {
                "params": ["author"],
                "filter": ["author"],
                "order_by": ["rank", "id"],
                "projection": ["id", "author"],
            },
            "queries.bad.projection must include the order_by field 'rank'",
        ),
        (
            {"params": ["rank"], "filter": ["rank"], "where": {"rank": {"field": "rank"}}},
            "queries.bad.filter names 'rank', which queries.bad.where compares already",
        ),
        (
            {"params": ["least"], "where": {"least": {"field": "rank", "op": "gte"}}},
            "",  # accepted: every param is compared by where
        ),
    ],
)
def test_prepare_refuses_what_rec_cannot_page_or_filter(query: dict[str, Any], words: str) -> None:
    declared = template(queries={**NOTE["queries"], "bad": query})
    if not words:
        assert plan_template(declared).queries["bad"].filter == ()
        return
    with pytest.raises(TemplateError) as caught:
        plan_template(declared)
    assert words in str(caught.value)
