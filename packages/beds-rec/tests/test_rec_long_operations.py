"""REC long operations without a server: pipeline checks at prepare, substitution, records."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId

from beds.calgon.tickets import LongOperationRunner, TicketStore
from beds.envelopes import Operation
from beds.errors import TemplateError, ValidationFailed
from beds.namaste import CallContext, StoreSettings
from beds.provision.needs import StoreNeeds, TemplateUse
from beds.templates.loader import parse_template
from beds.templates.model import Template
from beds_rec import RecAdapter
from beds_rec.long_operations import (
    PipelinePlan,
    RetentionPlan,
    _record,
    plan_long_operations,
)
from beds_rec.provision import RecProvisioner

TEMPLATE = """
name = "spx_post"
store = "rec"
tla = "spx"
key = ["id"]

[rec]
collection = "spx_posts"

[fields.id]
type = "str"
generated = true

[fields.author]
type = "str"

[operations.create]
params = ["author"]

[long_operations.stats]
steps = 3
{keys}

[long_operations.stats.params.who]
type = "str"
default = "ann"

[long_operations.stats.params.tags]
type = "json"
required = false
nullable = true

[long_operations.stats.params.days]
type = "int"
default = 7
"""

GOOD = """
pipeline = [
  {"$match" = {author = {"$param" = "who"}, days = {"$lte" = {"$param" = "days"}}}},
  {"$match" = {"$expr" = {"$eq" = [{"$mod" = ["$n", {"$param" = "steps"}]}, {"$param" = "step"}]}}},
  {"$lookup" = {from = "spx_authors", localField = "author", foreignField = "handle", as = "a"}},
  {"$set" = {label = {"$literal" = {"$param" = "who"}}, note = "{$param: who} and $param"}},
  {"$merge" = {into = "spx_stats", whenMatched = "replace"}},
]
"""


def template(keys: str = GOOD) -> Template:
    return parse_template(TEMPLATE.replace("{keys}", keys), source="spx_post.toml")


def refused(keys: str) -> str:
    """The message of the TemplateError preparing a template with these REC keys raises."""
    adapter = RecAdapter(StoreSettings(store="rec", options={"uri": URI, "database": "d"}))
    with pytest.raises(TemplateError) as caught:
        adapter.prepare(template(keys))
    return str(caught.value)


def pipeline(*stages: str) -> str:
    return "pipeline = [\n" + "".join(f"  {stage},\n" for stage in stages) + "]"


URI = "mongodb://127.0.0.1:9/"
MATCH = '{"$match" = {author = {"$param" = "who"}}}'


# -- what prepare accepts ---------------------------------------------------------------------


def test_a_pipeline_is_planned_with_the_collections_it_names() -> None:
    (plan,) = plan_long_operations(template(), "spx_posts").values()
    assert plan.operation == "stats"
    assert plan.collection == "spx_posts"
    assert plan.reads == ("spx_authors",)
    assert plan.writes == {"spx_stats": ("insert", "update")}


def test_the_collection_key_names_another_of_the_templates_collections() -> None:
    keys = 'collection = "spx_archive"\n' + pipeline(MATCH, '{"$out" = "spx_copy"}')
    (plan,) = plan_long_operations(template(keys), "spx_posts").values()
    assert plan.collection == "spx_archive"
    assert plan.writes == {"spx_copy": ("insert", "remove")}


def test_the_rec_adapter_runs_long_operations_and_keeps_tickets() -> None:
    adapter = RecAdapter(StoreSettings(store="rec", options={"uri": URI, "database": "d"}))
    adapter.prepare(template())
    assert "long_operations" in RecAdapter.features
    assert template().needs() <= RecAdapter.features
    assert isinstance(adapter, LongOperationRunner)
    assert isinstance(adapter, TicketStore)


# -- what prepare refuses, naming the key path --------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ("", "long_operations.stats.pipeline must be a non-empty array of aggregation stages"),
        ("pipeline = []", "long_operations.stats.pipeline must be a non-empty array"),
        (
            'procedure = "spx_stats"\n' + pipeline(MATCH),
            "long_operations.stats.procedure is not a REC key of a long operation "
            "(expected pipeline, collection)",
        ),
        (
            'collection = "posts"\n' + pipeline(MATCH),
            "long_operations.stats.collection 'posts' must start with the template's TLA prefix",
        ),
        (
            pipeline(MATCH, '{"$frobnicate" = {}}'),
            "long_operations.stats.pipeline[1].$frobnicate is not an aggregation stage a long "
            "operation may use",
        ),
        (
            pipeline(MATCH, '{"$collStats" = {}}'),
            "long_operations.stats.pipeline[1].$collStats is not an aggregation stage",
        ),
        (
            pipeline('{"$match" = {}, "$limit" = 1}'),
            "long_operations.stats.pipeline[0] must be a table with one key, the stage's name",
        ),
        (pipeline('"$match"'), "long_operations.stats.pipeline[0] must be a table with one key"),
        (
            pipeline(MATCH, '{"$out" = "spp_posts"}'),
            "long_operations.stats.pipeline[1].$out 'spp_posts' must start with the template's "
            "TLA prefix 'spx_'",
        ),
        (
            pipeline(MATCH, '{"$out" = {db = "admin", coll = "spx_stats"}}'),
            "long_operations.stats.pipeline[1].$out.db names a database: a long operation "
            "writes only into its template's collections",
        ),
        (
            pipeline(MATCH, '{"$merge" = {into = "beds_tickets"}}'),
            "long_operations.stats.pipeline[1].$merge.into 'beds_tickets' must start with",
        ),
        (
            pipeline(MATCH, '{"$merge" = {into = {db = "other", coll = "spx_stats"}}}'),
            "long_operations.stats.pipeline[1].$merge.into.db names a database",
        ),
        (
            pipeline('{"$out" = "spx_stats"}', MATCH),
            "long_operations.stats.pipeline[0].$out must be the last stage of "
            "long_operations.stats.pipeline",
        ),
        (
            pipeline(
                '{"$facet" = {a = [{"$out" = "spx_stats"}]}}',
            ),
            "long_operations.stats.pipeline[0].$facet.a[0].$out must be the last stage",
        ),
        (
            pipeline('{"$lookup" = {from = "spp_posts", as = "p", pipeline = []}}'),
            "long_operations.stats.pipeline[0].$lookup.from 'spp_posts' must start with",
        ),
        (
            pipeline('{"$unionWith" = "spp_posts"}'),
            "long_operations.stats.pipeline[0].$unionWith 'spp_posts' must start with",
        ),
        (
            pipeline('{"$match" = {author = {"$param" = "whom"}}}'),
            "long_operations.stats.pipeline[0].$match.author.$param names 'whom', which is not "
            "a param of stats (params: days, step, steps, tags, who)",
        ),
        (
            pipeline(
                MATCH,
                '{"$lookup" = {from = "spx_a", as = "a", pipeline = [{"$limit" = '
                '{"$param" = "n"}}]}}',
            ),
            "long_operations.stats.pipeline[1].$lookup.pipeline[0].$limit.$param names 'n'",
        ),
        (
            pipeline('{"$match" = {author = {"$param" = "who", other = 1}}}'),
            'long_operations.stats.pipeline[0].$match.author must be {"$param" = NAME} alone',
        ),
        (
            pipeline('{"$match" = {author = {"$param" = 3}}}'),
            'long_operations.stats.pipeline[0].$match.author must be {"$param" = NAME} alone',
        ),
        (
            pipeline('{"$set" = {label = {"$param" = "who"}}}'),
            "long_operations.stats.pipeline[0].$set.label puts str param 'who' in an "
            'aggregation expression: write {"$literal" = {"$param" = "who"}}',
        ),
        (
            pipeline('{"$match" = {"$expr" = {"$eq" = ["$tags", {"$param" = "tags"}]}}}'),
            "long_operations.stats.pipeline[0].$match.$expr.$eq[1] puts json param 'tags' in "
            "an aggregation expression",
        ),
        (
            pipeline('{"$match" = {"$where" = "this.a == 1"}}'),
            "long_operations.stats.pipeline[0].$match.$where runs JavaScript on the server",
        ),
        (
            pipeline('{"$out" = {"$param" = "who"}}'),
            "long_operations.stats.pipeline[0].$out.coll must be an identifier",
        ),
    ],
)
def test_prepare_refuses_a_bad_pipeline_naming_the_key_path(keys: str, words: str) -> None:
    message = refused(keys)
    assert "template 'spx_post': " in message
    assert words in message


def test_an_int_param_needs_no_literal_in_an_expression() -> None:
    keys = pipeline('{"$set" = {window = {"$add" = [{"$param" = "days"}, {"$param" = "step"}]}}}')
    assert plan_long_operations(template(keys), "spx_posts")


# -- substitution ----------------------------------------------------------------------------


def test_substitution_is_structural() -> None:
    (plan,) = plan_long_operations(template(), "spx_posts").values()
    assert isinstance(plan, PipelinePlan)
    stages = plan.stages({"who": "$where", "days": 7, "tags": None, "step": 1, "steps": 3})
    assert stages[0] == {"$match": {"author": "$where", "days": {"$lte": 7}}}
    assert stages[1] == {"$match": {"$expr": {"$eq": [{"$mod": ["$n", 3]}, 1]}}}
    # Inside $literal, the value is a value; a "$param" inside a string is just text.
    assert stages[3] == {
        "$set": {"label": {"$literal": "$where"}, "note": "{$param: who} and $param"}
    }
    assert plan.pipeline[0] == {
        "$match": {"author": {"$param": "who"}, "days": {"$lte": {"$param": "days"}}}
    }


def test_a_value_is_never_spliced_into_text() -> None:
    (plan,) = plan_long_operations(template(), "spx_posts").values()
    assert isinstance(plan, PipelinePlan)
    hostile = '"}}, {"$out": "spx_posts'
    stages = plan.stages({"who": hostile, "days": 7, "tags": None, "step": 0, "steps": 3})
    assert len(stages) == len(plan.pipeline)
    assert stages[0]["$match"]["author"] == hostile


async def test_a_json_param_with_operator_keys_is_refused_before_the_server() -> None:
    adapter = RecAdapter(StoreSettings(store="rec", options={"uri": URI, "database": "d"}))
    served = template(pipeline('{"$match" = {tags = {"$param" = "tags"}}}'))
    adapter.prepare(served)
    with pytest.raises(ValidationFailed) as caught:
        await adapter.run_step(
            served,
            served.long_operations["stats"],
            {"who": "ann", "days": 7, "tags": {"$ne": None}},
            0,
            CallContext(event_id="test.rec.long"),
        )
    assert caught.value.details[0].startswith("$.payload.params.tags: must have object keys")


# -- result documents as records ----------------------------------------------------------------


def test_results_follow_the_id_rule() -> None:
    oid = ObjectId()
    when = dt.datetime(2027, 1, 15, 8, 30, tzinfo=dt.UTC)
    document = {"_id": oid, "author": "ann", "total": Decimal128("1.50"), "at": when}
    assert _record(document, id_mapped=True) == {
        "id": str(oid),
        "author": "ann",
        "total": "1.50",
        "at": "2027-01-15T08:30:00Z",
    }
    assert _record(document, id_mapped=False) == {
        "author": "ann",
        "total": "1.50",
        "at": "2027-01-15T08:30:00Z",
    }
    grouped = {"_id": "ann", "posts": 3, "nested": {"ids": [oid]}}
    assert _record(grouped, id_mapped=True) == {"posts": 3, "nested": {"ids": [str(oid)]}}
    named = {"_id": oid, "id": "mine"}
    assert _record(named, id_mapped=True) == {"id": "mine"}


# -- provisioning -------------------------------------------------------------------------------


def test_a_role_serving_long_operations_may_run_them_and_keep_tickets() -> None:
    provisioner = RecProvisioner(
        StoreSettings(store="rec", options={"uri": "mongodb://u:p@db.example/", "database": "app"})
    )
    use = TemplateUse(template=template(), operations=frozenset({Operation.CREATE}))
    grants = provisioner.grants(
        StoreNeeds(role="appServer", store="rec", uses=(use,), keeps_tickets=True)
    )
    held = {(grant.name, grant.privilege) for grant in grants}
    for collection in ("beds_tickets", "beds_ticket_results"):
        for action in ("find", "insert", "update", "remove", "listIndexes"):
            assert (collection, action) in held
    assert {("spx_posts", "find"), ("spx_authors", "find")} <= held
    assert {("spx_stats", "insert"), ("spx_stats", "update")} <= held
    assert ("spx_stats", "remove") not in held
    assert ("spx_authors", "insert") not in held
    reasons = {grant.name: grant.reasons for grant in grants}
    assert "spx_post long operation stats" in reasons["spx_authors"]
    assert reasons["beds_tickets"] == ("CALGON tickets",)


def test_a_role_without_long_operations_gets_no_ticket_collections() -> None:
    provisioner = RecProvisioner(
        StoreSettings(store="rec", options={"uri": "mongodb://u:p@db.example/", "database": "app"})
    )
    plain = parse_template(TEMPLATE.split("[long_operations.stats]")[0], source="spx_post.toml")
    use = TemplateUse(template=plain, operations=frozenset({Operation.CREATE}))
    grants = provisioner.grants(StoreNeeds(role="appServer", store="rec", uses=(use,)))
    assert not {grant.name for grant in grants} & {"beds_tickets", "beds_ticket_results"}


# -- the retention sweep ------------------------------------------------------------------------

NOTES = """
name = "spx_note"
store = "rec"
tla = "spx"
key = ["id"]

[rec]
collection = "spx_notes"

[fields.id]
type = "str"
generated = true

[fields.text]
type = "str"

[fields.created_at]
type = "datetime"
generated = true

[operations.create]
params = ["text"]

[long_operations.sweep]
steps = 0
{keys}

[long_operations.sweep.params.before]
type = "datetime"

[long_operations.sweep.params.limit]
type = "int"
default = 100
minimum = 1
"""
RETAIN = 'retention = {field = "created_at"}'
COOL = RETAIN + '\ncool_collection = "spx_notes_cool"'


def notes(keys: str = COOL, *, name: str = "retention") -> Template:
    """The notes template with a sweep of these REC keys, named as the core names its own.

    The core adds the ``retention`` operation of a template with ``retention_days``; here it is
    declared (as ``sweep``) and renamed, so the test shows the binding the adapter gets.
    """
    declared = parse_template(NOTES.replace("{keys}", keys), source="spx_note.toml")
    sweep = attrs.evolve(declared.long_operations["sweep"], name=name)
    return attrs.evolve(declared, long_operations={name: sweep})


def notes_refused(keys: str, *, name: str = "retention") -> str:
    adapter = RecAdapter(StoreSettings(store="rec", options={"uri": URI, "database": "d"}))
    with pytest.raises(TemplateError) as caught:
        adapter.prepare(notes(keys, name=name))
    return str(caught.value)


def declared(retention: str) -> Template:
    """The notes template declaring retention itself: the core adds the sweep."""
    head = NOTES.split("[long_operations.sweep]")[0]
    text = f"{head}\n[capabilities]\nretention_days = 365\n\n[retention]\n{retention}\n"
    return parse_template(text, source="spx_note.toml")


def test_the_sweep_the_core_adds_for_retention_days_is_planned() -> None:
    template = declared('field = "created_at"\ncool_collection = "spx_notes_cool"')
    plan = plan_long_operations(template, "spx_notes")["retention"]
    assert plan == RetentionPlan(
        operation="retention",
        collection="spx_notes",
        field="created_at",
        cool_collection="spx_notes_cool",
    )
    deleting = plan_long_operations(declared('field = "created_at"'), "spx_notes")["retention"]
    assert isinstance(deleting, RetentionPlan)
    assert deleting.cool_collection is None


def test_a_declared_retention_with_a_rel_key_is_refused_on_rec() -> None:
    adapter = RecAdapter(StoreSettings(store="rec", options={"uri": URI, "database": "d"}))
    with pytest.raises(TemplateError) as caught:
        adapter.prepare(declared('field = "created_at"\nprocedure = "spx_retire"'))
    assert "retention.procedure is not a REC retention key (expected cool_collection)" in str(
        caught.value
    )


def test_a_retention_binding_is_planned_with_its_cool_collection() -> None:
    (plan,) = plan_long_operations(notes(), "spx_notes").values()
    assert plan == RetentionPlan(
        operation="retention",
        collection="spx_notes",
        field="created_at",
        cool_collection="spx_notes_cool",
    )
    assert plan.needed == ("spx_notes", "spx_notes_cool")
    assert plan.writes == {"spx_notes": ("remove",), "spx_notes_cool": ("insert", "update")}


def test_without_a_cool_collection_the_sweep_deletes() -> None:
    (plan,) = plan_long_operations(notes(RETAIN), "spx_notes").values()
    assert isinstance(plan, RetentionPlan)
    assert plan.cool_collection is None
    assert plan.needed == ("spx_notes",)
    assert plan.writes == {"spx_notes": ("remove",)}


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        (
            COOL + '\nprocedure = "spx_retire"',
            "retention.procedure is not a REC retention key (expected cool_collection)",
        ),
        (
            RETAIN + "\n" + pipeline(MATCH),
            "retention.pipeline is not a REC retention key (expected cool_collection)",
        ),
        (
            'retention = {field = "created_at", batch = 3}',
            "retention: the retention binding must be {field = NAME}",
        ),
        ('retention = "created_at"', "retention: the retention binding must be {field = NAME}"),
        (
            'retention = {field = "made_at"}',
            "retention.field names 'made_at', which is not a datetime field of the template "
            "(datetime fields: created_at)",
        ),
        (
            'retention = {field = "text"}',
            "retention.field names 'text', which is not a datetime field of the template",
        ),
        (
            RETAIN + '\ncool_collection = "notes_cool"',
            "retention.cool_collection 'notes_cool' must start with the template's TLA prefix",
        ),
        (
            RETAIN + '\ncool_collection = "spx_notes.x"',
            "retention.cool_collection must be an identifier",
        ),
        (
            RETAIN + '\ncool_collection = "spx_notes"',
            "retention.cool_collection 'spx_notes' is the template's own collection",
        ),
    ],
)
def test_prepare_refuses_a_bad_retention_binding_naming_the_key(keys: str, words: str) -> None:
    message = notes_refused(keys)
    assert "template 'spx_note': " in message
    assert words in message


def test_a_sweep_takes_exactly_the_params_before_and_limit() -> None:
    keys = COOL + "\n[long_operations.sweep.params.days]\ntype = 'int'\ndefault = 3"
    assert (
        "long_operations.retention: a retention sweep takes params before and limit"
        in notes_refused(keys)
    )


def test_a_declared_operation_with_a_retention_binding_is_named_by_its_own_path() -> None:
    message = notes_refused(RETAIN + '\ncool_collection = "other"', name="sweep")
    assert "long_operations.sweep.cool_collection 'other' must start with" in message


async def test_a_batch_limit_below_one_is_refused_before_the_server() -> None:
    adapter = RecAdapter(StoreSettings(store="rec", options={"uri": URI, "database": "d"}))
    served = notes()
    adapter.prepare(served)
    before = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ValidationFailed) as caught:
        await adapter.run_step(
            served,
            served.long_operations["retention"],
            {"before": before, "limit": 0},
            0,
            CallContext(event_id="test.rec.retention"),
        )
    assert caught.value.details == ("$.payload.params.limit: must be at least 1",)


def test_a_role_running_the_sweep_may_read_and_remove_and_fill_the_cool_collection() -> None:
    provisioner = RecProvisioner(
        StoreSettings(store="rec", options={"uri": "mongodb://u:p@db.example/", "database": "app"})
    )
    use = TemplateUse(template=notes(), operations=frozenset({Operation.CREATE}))
    grants = provisioner.grants(
        StoreNeeds(role="appServer", store="rec", uses=(use,), keeps_tickets=True)
    )
    held = {(grant.name, grant.privilege) for grant in grants}
    assert {("spx_notes", "find"), ("spx_notes", "remove")} <= held
    assert {("spx_notes_cool", "insert"), ("spx_notes_cool", "update")} <= held
    assert ("spx_notes_cool", "remove") not in held
    reasons = {grant.name: grant.reasons for grant in grants}
    assert "spx_note long operation retention" in reasons["spx_notes_cool"]
