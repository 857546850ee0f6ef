from __future__ import annotations

from pathlib import Path

import pytest

from beds.errors import TemplateError
from beds.templates.loader import parse_template
from beds.templates.model import Template
from beds_rec.bindings import QueryPlan, plan_template

# The example domain, read from the repository: its package is not installed in unit tests.
EXAMPLE_PACKAGE = Path(__file__).parents[2] / "beds-templates-example/src/beds_templates_example"

FIELDS = """
name = "spew_thing"
store = "rec"
tla = "spt"
key = ["handle"]

[fields.handle]
type = "str"

[fields.label]
type = "str"

[fields.id]
type = "str"
generated = true

[fields.created_at]
type = "datetime"
generated = true

[operations.create]
params = ["handle", "label"]
returns = ["id", "created_at"]

[operations.update]
params = ["handle", "label"]
returns = ["handle", "label"]

[operations.delete]
params = ["handle"]
"""

REC = """
[rec]
collection = "spt_things"
indexes = ["spt_handle_uq"]
"""

QUERY = """
[queries.by_label]
params = ["label"]
filter = ["label"]
projection = ["id", "handle"]
sort = [["handle", -1], ["id", 1]]
"""


def template(fields: str = FIELDS, rec: str = REC, query: str = QUERY) -> Template:
    return parse_template(fields + rec + query, source="test.toml")


def test_spew_profile_is_served() -> None:
    text = EXAMPLE_PACKAGE.joinpath("templates/spew_profile.toml").read_text(encoding="utf-8")
    plan = plan_template(parse_template(text, source="spew_profile.toml"))
    assert plan.collection == "spf_profiles"
    assert plan.indexes == ("spf_handle_uq",)
    assert plan.id_mapped
    assert plan.stamps_created_at
    assert plan.queries["by_display_name"] == QueryPlan(
        filter=("display_name",), projection=("handle", "display_name"), sort=(("handle", 1),)
    )
    assert plan.projection(("handle", "display_name")) == {"_id": 0, "handle": 1, "display_name": 1}
    assert plan.projection(("id", "handle")) == {"_id": 1, "handle": 1}


def test_plan_maps_id_to_the_document_id() -> None:
    plan = plan_template(template())
    assert plan.queries["by_label"].sort == (("handle", -1), ("id", 1))
    assert plan.document_field("id") == "_id"
    assert plan.document_field("label") == "label"


def test_an_id_that_is_not_generated_is_an_ordinary_field() -> None:
    fields = FIELDS.replace(
        '[fields.id]\ntype = "str"\ngenerated = true', '[fields.id]\ntype = "str"'
    )
    fields = fields.replace('returns = ["id", "created_at"]', 'returns = ["created_at"]')
    plan = plan_template(template(fields=fields))
    assert not plan.id_mapped
    assert plan.document_field("id") == "id"
    assert plan.projection(("id",)) == {"_id": 0, "id": 1}


def test_projection_defaults_to_every_field_and_filter_to_none() -> None:
    plan = plan_template(template(query="[queries.everything]\nparams = []\n"))
    assert plan.queries["everything"] == QueryPlan(
        filter=(), projection=("handle", "label", "id", "created_at"), sort=()
    )


@pytest.mark.parametrize(
    ("rec", "query", "words"),
    [
        (REC.replace("spt_things", "things"), QUERY, "rec.collection 'things' must start with"),
        (REC.replace('"spt_things"', "3"), QUERY, "rec.collection must be an identifier"),
        ("[rec]\nindexes = []\n", QUERY, "rec.collection must be an identifier"),
        (REC.replace("spt_handle_uq", "handle_uq"), QUERY, "rec.indexes[0] 'handle_uq'"),
        (REC.replace('["spt_handle_uq"]', '"spt_handle_uq"'), QUERY, "rec.indexes must be a list"),
        (REC + 'views = ["x"]\n', QUERY, "rec.views is not a REC key"),
        (
            REC,
            QUERY.replace('filter = ["label"]', 'filter = ["handle"]'),
            "filter names 'handle', which is not a param",
        ),
        (
            REC,
            QUERY.replace('filter = ["label"]', "filter = []"),
            "params declares 'label', which neither the filter nor where uses",
        ),
        (
            REC,
            QUERY.replace('filter = ["label"]', 'filter = "label"'),
            "filter must be a list of field names",
        ),
        (
            REC,
            QUERY.replace('projection = ["id", "handle"]', 'projection = ["id", "nope"]'),
            "projection names 'nope', which is not a declared field",
        ),
        (
            REC,
            QUERY.replace('projection = ["id", "handle"]', 'projection = ["id", "id"]'),
            "projection names a field twice",
        ),
        (
            REC,
            QUERY.replace('projection = ["id", "handle"]', "projection = []"),
            "projection must name a field",
        ),
        (
            REC,
            QUERY.replace('[["handle", -1], ["id", 1]]', '[["handle", 2]]'),
            "sort[0] must be [field, 1] or [field, -1]",
        ),
        (
            REC,
            QUERY.replace('[["handle", -1], ["id", 1]]', '[["handle", true]]'),
            "sort[0] must be",
        ),
        (
            REC,
            QUERY.replace('[["handle", -1], ["id", 1]]', '[["nope", 1]]'),
            "sort[0] names 'nope'",
        ),
        (
            REC,
            QUERY.replace('[["handle", -1], ["id", 1]]', '[["id", 1], ["id", -1]]'),
            "sort names a field twice",
        ),
        (REC, QUERY.replace('[["handle", -1], ["id", 1]]', '"handle"'), "sort must be a list"),
        (REC, QUERY + 'filters = ["label"]\n', "queries.by_label.filters is not a REC key"),
        (REC, QUERY + 'view = "spt_v"\n', "queries.by_label.view is not a REC key"),
    ],
)
def test_prepare_rejects_bad_declarations(rec: str, query: str, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        plan_template(template(rec=rec, query=query))
    assert words in str(caught.value)
    assert caught.value.template == "spew_thing"


def test_write_operations_take_no_binding() -> None:
    fields = FIELDS.replace(
        '[operations.delete]\nparams = ["handle"]',
        '[operations.delete]\nparams = ["handle"]\nprocedure = "spt_delete"',
    )
    with pytest.raises(TemplateError, match=r"operations\.delete\.procedure is not a REC key"):
        plan_template(template(fields=fields))


def test_only_id_and_created_at_are_generated() -> None:
    fields = FIELDS + '\n[fields.updated_at]\ntype = "datetime"\ngenerated = true\n'
    with pytest.raises(TemplateError, match=r"fields\.updated_at is generated"):
        plan_template(template(fields=fields))


@pytest.mark.parametrize(("name", "wrong"), [("id", "int"), ("created_at", "str")])
def test_generated_fields_need_their_type(name: str, wrong: str) -> None:
    fields = FIELDS.replace(
        f'[fields.{name}]\ntype = "{"str" if name == "id" else "datetime"}"',
        f'[fields.{name}]\ntype = "{wrong}"',
    )
    with pytest.raises(TemplateError, match=rf"fields\.{name} must have type"):
        plan_template(template(fields=fields))


def test_update_may_not_set_a_generated_field() -> None:
    fields = FIELDS.replace(
        'params = ["handle", "label"]\nreturns = ["handle", "label"]',
        'params = ["handle", "label", "created_at"]\nreturns = ["handle", "label"]',
    )
    with pytest.raises(
        TemplateError, match=r"operations\.update\.params names generated field 'created_at'"
    ):
        plan_template(template(fields=fields))
