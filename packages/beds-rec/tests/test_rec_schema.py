from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beds.errors import TemplateError
from beds.namaste import SchemaFile
from beds_rec.schema import CollectionSchema, IndexSchema, parse_schema_file

# The example domain, read from the repository: its package is not installed in unit tests.
EXAMPLE_PACKAGE = Path(__file__).parents[2] / "beds-templates-example/src/beds_templates_example"


def schema_file(data: Any) -> SchemaFile:
    text = data if isinstance(data, str) else json.dumps(data)
    return SchemaFile(name="pkg/schema/rec/001_x.json", text=text)


def test_the_spew_profile_schema_parses() -> None:
    text = EXAMPLE_PACKAGE.joinpath("schema/rec/001_spew_profile.json").read_text(encoding="utf-8")
    schema = parse_schema_file(SchemaFile(name="001_spew_profile.json", text=text))
    assert schema.collection == "spf_profiles"
    assert schema.validator is not None
    assert set(schema.validator["$jsonSchema"]["properties"]) == {
        "handle",
        "display_name",
        "bio",
        "created_at",
    }
    assert schema.indexes == (
        IndexSchema(name="spf_handle_uq", keys=(("handle", 1),), unique=True),
        IndexSchema(name="spf_display_name_ix", keys=(("display_name", 1), ("handle", 1))),
    )


def test_validator_and_indexes_are_optional() -> None:
    assert parse_schema_file(schema_file({"collection": "abc_x"})) == CollectionSchema(
        collection="abc_x", validator=None, indexes=()
    )


GOOD_INDEX = {"name": "abc_i", "keys": [["a", 1]]}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("{not json", "is not valid JSON"),
        ([], "must be a JSON object"),
        ({"collection": "abc_x", "views": []}, "views is not a schema key"),
        ({}, "collection must be an identifier"),
        ({"collection": "a.b"}, "collection must be an identifier"),
        ({"collection": "abc_x", "validator": []}, "validator must be a JSON object"),
        ({"collection": "abc_x", "indexes": {}}, "indexes must be a list"),
        ({"collection": "abc_x", "indexes": [1]}, "indexes[0] must be a JSON object"),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "ttl": 1}]},
            "indexes[0].ttl is not an index key",
        ),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "name": "a b"}]},
            "indexes[0].name must be an identifier",
        ),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "keys": []}]},
            "indexes[0].keys must be",
        ),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "keys": [["a", 2]]}]},
            "indexes[0].keys must be",
        ),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "keys": [["a", True]]}]},
            "indexes[0].keys must be",
        ),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "keys": [["", 1]]}]},
            "indexes[0].keys must be",
        ),
        (
            {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "unique": "yes"}]},
            "indexes[0].unique must be true or false",
        ),
        (
            {"collection": "abc_x", "indexes": [GOOD_INDEX, GOOD_INDEX]},
            "declares an index name twice",
        ),
        *(
            (
                {"collection": "abc_x", "indexes": [{**GOOD_INDEX, "expire_after_seconds": bad}]},
                "indexes[0].expire_after_seconds must be a whole number of seconds, 0 or more",
            )
            for bad in (-1, 1.5, True, "60")
        ),
    ],
)
def test_bad_schema_files_name_the_file_and_key(data: Any, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_schema_file(schema_file(data))
    assert caught.value.template == "pkg/schema/rec/001_x.json"
    assert words in str(caught.value)


def test_a_ttl_index_and_the_idempotency_collection_parse() -> None:
    from beds_rec.idempotency import schema_file as keys_schema_file

    schema = parse_schema_file(keys_schema_file())
    assert schema.collection == "beds_idempotency"
    (ttl,) = schema.indexes
    assert ttl.options() == {
        "name": "beds_idempotency_ttl",
        "unique": False,
        "sparse": False,
        "expireAfterSeconds": 0,
    }
