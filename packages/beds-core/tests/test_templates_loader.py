"""Template declarations: the TOML loader, the model, and the example package."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.auth import Principal
from beds.envelopes import Operation
from beds.errors import TemplateError
from beds.registry import distribution_of
from beds.templates import AccessRules, FieldType, Template, parse_template
from beds.templates.model import Filter, FilterOp

# -- the real example templates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "distribution"),
    [
        # A regular install: found through its RECORD. (Editable installs, found through their
        # `beds` entry point, are tested in tests/integration/test_installed_packages.py.)
        ("pluggy", "pluggy"),
        ("no_such_package_here", ""),
    ],
)
def test_distribution_of(package: str, distribution: str) -> None:
    assert distribution_of(package) == distribution


def test_demo_declaration_parses(demo_template: Template) -> None:
    template = demo_template
    assert template.name == "demo_item"
    assert template.source == "demo.toml"
    assert template.distribution == ""
    assert template.description == "Every field type and option, for tests."
    assert {name: f.type for name, f in template.fields.items()} == {
        "id": FieldType.INT,
        "title": FieldType.STR,
        "count": FieldType.INT,
        "active": FieldType.BOOL,
        "ratio": FieldType.FLOAT,
        "due": FieldType.DATETIME,
        "price": FieldType.DECIMAL,
        "created_at": FieldType.DATETIME,
    }
    assert template.fields["count"].minimum == 0.0
    assert template.fields["ratio"].maximum == 1.0
    assert template.fields["title"].min_length == 2
    assert template.default_query == "by_title"
    assert template.capabilities.audit
    assert not template.capabilities.locking
    assert not template.capabilities.cache
    assert template.capabilities.journal
    recent = template.queries["recent"]
    assert recent.pageable
    assert recent.condition("since") == Filter(param="since", field="created_at", op=FilterOp.GTE)
    assert [(o.field, o.descending) for o in recent.order_by] == [
        ("created_at", True),
        ("id", False),
    ]
    assert template.store_options == {"table": "dmi_items"}
    assert template.operations[Operation.UPDATE].binding == {}
    assert template.queries["by_title"].binding == {"view": "dmi_by_title_v"}


def test_defaults(demo_declaration: dict[str, Any]) -> None:
    for key in ("default_query", "capabilities", "access", "description", "memory"):
        del demo_declaration[key]
    template = parse_template(tomlkit.dumps(demo_declaration), source="demo.toml")
    assert template.default_query == "by_count"  # the first query declared
    assert template.version == 1
    assert template.store_options == {}
    assert not template.capabilities.audit
    assert template.access.allows(Operation.DELETE, None)
    field = template.fields["count"]
    assert (field.required, field.nullable, field.generated) == (True, False, False)


def test_access_rules_name_roles(demo_template: Template) -> None:
    access = demo_template.access
    member = Principal(id="u1", handle="alice", roles=frozenset({"member"}))
    guest = Principal(id="u2", handle="bob", roles=frozenset({"guest"}))
    assert access.allows(Operation.CREATE, member)
    assert not access.allows(Operation.CREATE, guest)
    assert not access.allows(Operation.CREATE, None)
    assert access.allows(Operation.FETCH, None)  # "*"
    assert access.allows(Operation.DELETE, None)  # not declared
    assert access.open_writes == (Operation.UPDATE, Operation.DELETE)
    authenticated = AccessRules(rules={Operation.CREATE: frozenset({"authenticated"})})
    assert authenticated.allows(Operation.CREATE, guest)
    assert not authenticated.allows(Operation.CREATE, None)


# -- bad declarations ----------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def put(path: str, value: Any) -> Mutation:
    def mutate(declaration: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            declaration = declaration.setdefault(key, {})
        declaration[last] = value

    return mutate


def drop(path: str) -> Mutation:
    def mutate(declaration: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            declaration = declaration[key]
        del declaration[last]

    return mutate


BAD_DECLARATIONS: list[Any] = [
    pytest.param(put("name", "Demo-Item"), "name", id="bad-name"),
    pytest.param(put("name", "demo_item\n"), "name", id="name-with-newline"),
    pytest.param(put("name", "x" * 64), "name", id="name-too-long"),
    pytest.param(drop("name"), "name", id="no-name"),
    pytest.param(put("store", "Mongo DB"), "store", id="bad-store"),
    pytest.param(put("tla", "DMI"), "tla", id="tla-upper-case"),
    pytest.param(put("tla", "dmix"), "tla", id="tla-four-letters"),
    pytest.param(put("tla", 3), "tla", id="tla-not-text"),
    pytest.param(put("colour", "red"), "colour", id="unknown-top-level-key"),
    pytest.param(put("fields", {}), "fields", id="no-fields"),
    pytest.param(put("fields.Title", {"type": "str"}), "fields.Title", id="bad-field-name"),
    pytest.param(put("fields.title.maxlen", 3), "fields.title.maxlen", id="unknown-field-option"),
    pytest.param(put("fields.title.type", "string"), "fields.title.type", id="bad-field-type"),
    pytest.param(drop("fields.title.type"), "fields.title.type", id="no-field-type"),
    pytest.param(put("fields.title.required", "yes"), "fields.title.required", id="required-text"),
    pytest.param(put("fields.title.max_length", -1), "fields.title.max_length", id="negative"),
    pytest.param(put("fields.count.minimum", "0"), "fields.count.minimum", id="minimum-text"),
    pytest.param(put("fields.title.pattern", "[a-"), "fields.title.pattern", id="invalid-regex"),
    pytest.param(put("fields.title", "str"), "fields.title", id="field-not-a-table"),
    pytest.param(put("key", ["nope"]), "key", id="key-names-a-non-field"),
    pytest.param(put("key", []), "key", id="empty-key"),
    pytest.param(
        put("operations.create.params", ["id", "title"]),
        "operations.create.params",
        id="create-param-is-generated",
    ),
    pytest.param(
        put("operations.create.params", ["title", "title"]),
        "operations.create.params",
        id="param-twice",
    ),
    pytest.param(
        put("operations.update.params", ["title"]),
        "operations.update.params",
        id="update-params-miss-the-key",
    ),
    pytest.param(
        put("operations.delete.params", []), "operations.delete.params", id="delete-without-key"
    ),
    pytest.param(
        put("operations.create.returns", ["nope"]),
        "operations.create.returns",
        id="returns-non-field",
    ),
    pytest.param(put("operations.fetch", {"params": []}), "operations.fetch", id="fetch-as-op"),
    pytest.param(
        put("queries.by_title.params", ["nope"]),
        "queries.by_title.params",
        id="query-param-not-a-field",
    ),
    pytest.param(
        put("queries.by_title.max_limit", 0), "queries.by_title.max_limit", id="max-limit-zero"
    ),
    pytest.param(put("queries.ByTitle", {"params": []}), "queries.ByTitle", id="bad-query-name"),
    pytest.param(put("default_query", "nope"), "default_query", id="default-query-unknown"),
    pytest.param(put("default_query", ["by_title"]), "default_query", id="default-query-list"),
    pytest.param(
        put("capabilities.teleport", True), "capabilities.teleport", id="unknown-capability"
    ),
    pytest.param(put("capabilities.audit", 1), "capabilities.audit", id="capability-not-bool"),
    pytest.param(
        put("queries.by_title.principal", "nope"),
        "queries.by_title.principal",
        id="principal-not-a-param",
    ),
    pytest.param(
        put("queries.by_count.principal", "count"),
        "queries.by_count.principal",
        id="principal-not-str",
    ),
    pytest.param(put("access.ticket", ["*"]), "access.ticket", id="access-on-unknown-op"),
    pytest.param(put("access.fetch", "*"), "access.fetch", id="access-not-a-list"),
    pytest.param(put("version", 0), "version", id="version-zero"),
]


@pytest.mark.parametrize(("mutate", "path"), BAD_DECLARATIONS)
def test_bad_declaration_names_the_key_path(
    demo_declaration: dict[str, Any], mutate: Mutation, path: str
) -> None:
    mutate(demo_declaration)
    text = tomlkit.dumps(demo_declaration)
    with pytest.raises(TemplateError) as info:
        parse_template(text, source="demo.toml")
    message = str(info.value)
    assert f"demo.toml: {path} " in message
    # Deterministic: the same declaration always gets the same message.
    with pytest.raises(TemplateError) as again:
        parse_template(text, source="demo.toml")
    assert str(again.value) == message


def test_invalid_toml_names_the_document() -> None:
    with pytest.raises(TemplateError, match=r"demo\.toml: document is not valid TOML") as info:
        parse_template('name = "demo_item"\nfields = [', source="demo.toml")
    assert info.value.template == "demo.toml"


def test_error_names_the_template_once_known(demo_declaration: dict[str, Any]) -> None:
    put("tla", "no")(demo_declaration)
    with pytest.raises(TemplateError) as info:
        parse_template(tomlkit.dumps(demo_declaration), source="demo.toml")
    assert info.value.template == "demo_item"
    assert str(info.value) == (
        "template 'demo_item': demo.toml: tla must be three lower-case letters, got 'no'"
    )


# -- object names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spp_create", "SPP_create", "spp_" + "x" * 60])
def test_object_name_accepts_tla_prefixed_identifiers(
    spew_templates: dict[str, Template], name: str
) -> None:
    post = spew_templates["spew_post"]
    assert post.object_name(name, key="operations.create.procedure") == name


@pytest.mark.parametrize(
    "value",
    [
        "create_post",
        "spp",
        "sppcreate",
        "spp_x; DROP TABLE spp_posts",
        "spp_create\n",
        "spp-create",
        "spp_" + "x" * 61,
        "",
        None,
        5,
        ["spp_create"],
    ],
    ids=repr,
)
def test_object_name_rejects(spew_templates: dict[str, Template], value: Any) -> None:
    post = spew_templates["spew_post"]
    with pytest.raises(TemplateError) as info:
        post.object_name(value, key="operations.create.procedure")
    assert info.value.template == "spew_post"
    assert "operations.create.procedure" in str(info.value)


def test_object_name_message_names_the_prefix(spew_templates: dict[str, Template]) -> None:
    with pytest.raises(TemplateError) as info:
        spew_templates["spew_post"].object_name("create_post", key="procedure")
    assert str(info.value) == (
        "template 'spew_post': procedure 'create_post' must start with the template's "
        "TLA prefix 'spp_'"
    )


# -- properties ----------------------------------------------------------------------------------


def parse_or_error(text: str) -> Template | TemplateError:
    """Parse, returning the TemplateError instead of raising it (any other exception escapes)."""
    try:
        return parse_template(text, source="fuzz.toml")
    except TemplateError as error:
        return error


@given(st.text(max_size=200))
@settings(deadline=None)
def test_any_text_is_a_template_or_a_template_error(text: str) -> None:
    result = parse_or_error(text)
    if isinstance(result, TemplateError):
        assert re.match(r"template '[^']*': fuzz\.toml: \S", str(result))


toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-3, max_value=300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["id", "title", "count", "str", "int", "by_title", "dmi_x", "*"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "params", "max_limit", "title", "required", "pattern"])
            | st.text(max_size=4),
            children,
            max_size=3,
        )
    ),
    max_leaves=6,
)

DECLARATION_PATHS = [
    "name",
    "store",
    "tla",
    "key",
    "fields",
    "fields.title",
    "fields.title.type",
    "fields.title.pattern",
    "fields.count.minimum",
    "operations",
    "operations.create",
    "operations.create.params",
    "operations.update.params",
    "queries",
    "queries.by_title",
    "queries.by_title.max_limit",
    "default_query",
    "capabilities",
    "access",
    "access.create",
    "version",
    "memory",
    "description",
]


@given(st.sampled_from(DECLARATION_PATHS), toml_values)
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_change_to_a_declaration_is_a_template_or_a_template_error(
    demo_declaration: dict[str, Any], path: str, value: Any
) -> None:
    declaration = tomlkit.parse(tomlkit.dumps(demo_declaration)).unwrap()
    put(path, value)(declaration)
    result = parse_or_error(tomlkit.dumps(declaration))
    if isinstance(result, TemplateError):
        assert re.match(r"template '[^']*': fuzz\.toml: \S", str(result))
    else:
        assert result.name == declaration["name"]


def test_optional_field_must_be_nullable(demo_declaration: dict[str, Any]) -> None:

    demo_declaration["fields"]["optional_text"] = {"type": "str", "required": False}
    with pytest.raises(TemplateError) as caught:
        parse_template(tomlkit.dumps(demo_declaration), source="demo.toml")
    assert "fields.optional_text.required = false needs nullable = true" in str(caught.value)
