"""REC accounts without a server: the actions a role needs, and the mongosh plan.

Creating the role and the user on a server is exercised by tests/e2e/test_provision.py.
"""

from __future__ import annotations

import pytest

from beds.envelopes import Operation
from beds.errors import BedsError
from beds.namaste import StoreSettings
from beds.provision.needs import StoreAccount, StoreNeeds, TemplateUse
from beds.registry import TemplateRegistry
from beds.templates.model import Template
from beds_rec import plugin
from beds_rec.provision import RecProvisioner

TEMPLATE = """
name = "spz_profile"
store = "rec"
tla = "spz"
key = ["handle"]

[access]
create = ["*"]
update = ["*"]
delete = ["*"]
fetch = ["*"]

[rec]
collection = "spz_profiles"

[fields.handle]
type = "str"

[operations.create]
params = ["handle"]

[operations.delete]
params = ["handle"]

[queries.by_handle]
params = ["handle"]
max_limit = 1
filter = ["handle"]
projection = ["handle"]
"""

URI = "mongodb://node:s3cret@db.example:27017/?replicaSet=rs0"


@pytest.fixture(scope="module")
def template() -> Template:
    return TemplateRegistry().add_text(TEMPLATE, source="spz_profile.toml")


def _provisioner(**options: object) -> RecProvisioner:
    table = {"uri": URI, "database": "app", **options}
    return RecProvisioner(StoreSettings(store="rec", options=table))


def _actions(needs: StoreNeeds, **options: object) -> set[tuple[str, str]]:
    return {(g.name, g.privilege) for g in _provisioner(**options).grants(needs)}


def test_a_reader_may_find_and_check_its_collection(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset({Operation.FETCH}))
    assert _actions(StoreNeeds(role="r", store="rec", uses=(use,))) == {
        ("spz_profiles", "find"),
        ("spz_profiles", "listIndexes"),
        ("", "listCollections"),
        ("beds_schema_migrations", "find"),  # the start-up check (beds.migrations)
    }


def test_a_writer_may_write_what_it_serves_and_keep_idempotency_keys(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset({Operation.CREATE}))
    needs = StoreNeeds(role="w", store="rec", uses=(use,))
    found = _actions(needs)
    assert ("spz_profiles", "insert") in found
    assert ("spz_profiles", "remove") not in found  # delete is not routed to it
    assert {a for c, a in found if c == "beds_idempotency"} == {
        "find",
        "insert",
        "update",
        "remove",
    }
    assert not any(c == "beds_idempotency" for c, _ in _actions(needs, idempotency=False))


def test_a_journaled_template_may_read_its_journal_and_writers_append_to_it(
    template: Template,
) -> None:
    import attrs

    journaled = attrs.evolve(
        template, capabilities=attrs.evolve(template.capabilities, journal=True)
    )
    reader = TemplateUse(template=journaled, operations=frozenset({Operation.FETCH}))
    writer = TemplateUse(template=journaled, operations=frozenset({Operation.CREATE}))
    read = _actions(StoreNeeds(role="r", store="rec", uses=(reader,)))
    written = _actions(StoreNeeds(role="w", store="rec", uses=(writer,)))
    assert {a for c, a in read if c == "beds_journal"} == {"find", "listIndexes"}
    assert {a for c, a in written if c == "beds_journal"} == {"find", "listIndexes", "insert"}
    assert not any(
        c == "beds_journal"
        for c, _ in _actions(
            StoreNeeds(
                role="r",
                store="rec",
                uses=(TemplateUse(template=template, operations=frozenset({Operation.FETCH})),),
            )
        )
    )


def test_a_role_that_keeps_lineage_may_insert_find_and_purge_events() -> None:
    needs = StoreNeeds(role="admin", store="rec", uses=(), keeps_events=True)
    assert _actions(needs) == {
        ("msLogs", "insert"),
        ("msLogs", "find"),
        ("msLogs", "remove"),
        ("beds_schema_migrations", "find"),
        ("", "listCollections"),
    }


def test_the_plan_is_mongosh_without_the_password(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset({Operation.FETCH}))
    provisioner = _provisioner()
    grants = provisioner.grants(StoreNeeds(role="r", store="rec", uses=(use,)))
    account = StoreAccount(role="r", user="beds-dev-r", grants=grants)
    role, user = provisioner.statements(account)
    assert role.startswith('db.getSiblingDB("app").createRole({"role":"beds-dev-r",')
    assert (
        '{"resource":{"db":"app","collection":"spz_profiles"},"actions":["find","listIndexes"]}'
        in role
    )
    assert user == (
        'db.getSiblingDB("app").createUser({"user":"beds-dev-r","pwd":"***",'
        '"roles":[{"role":"beds-dev-r","db":"app"}]})'
    )
    assert provisioner.url_for(account, "p@ss") == (
        "mongodb://beds-dev-r:p%40ss@db.example:27017/?replicaSet=rs0&authSource=app"
    )
    assert provisioner.user == "node"


def test_the_embedded_server_has_no_accounts() -> None:
    embedded = RecProvisioner(StoreSettings(store="rec", options={"database": "app"}))
    account = StoreAccount(role="r", user="u", grants=())
    with pytest.raises(BedsError, match="embedded MongoDB server"):
        embedded.url_for(account, "pw")


def test_the_plugin_provisions_the_rec_store_only() -> None:
    settings = StoreSettings(store="rec", options={"uri": URI, "database": "app"})
    assert isinstance(plugin.beds_store_provisioner(settings), RecProvisioner)
    assert plugin.beds_store_provisioner(StoreSettings(store="rel", options={})) is None
