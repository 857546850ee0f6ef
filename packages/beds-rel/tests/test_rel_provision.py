"""REL accounts without a server: the grants a role needs, the statements, SHOW GRANTS parsed.

The statements against a real MariaDB are exercised by tests/e2e/test_provision.py.
"""

from __future__ import annotations

import pytest

from beds.envelopes import Operation
from beds.namaste import StoreSettings
from beds.provision.needs import StoreAccount, StoreNeeds, TemplateUse
from beds.registry import TemplateRegistry
from beds.templates.model import Template
from beds_rel import plugin
from beds_rel.provision import Held, RelProvisioner, _native_hash, parse_grants

TEMPLATE = """
name = "spx_post"
store = "rel"
tla = "spx"
key = ["id"]

[access]
create = ["*"]
update = ["*"]
delete = ["*"]
fetch = ["*"]

[fields.id]
type = "int"

[fields.author]
type = "str"

[operations.create]
params = ["author"]
procedure = "spx_create"

[operations.delete]
params = ["id"]
procedure = "spx_delete"

[queries.by_id]
params = ["id"]
max_limit = 1
view = "spx_posts_v"

[queries.count]
params = ["author"]
max_limit = 1
function = "spx_count"
returns = "n"

[queries.secret]
params = ["author"]
max_limit = 1
internal = true
procedure = "spx_secret"
"""


@pytest.fixture(scope="module")
def template() -> Template:
    return TemplateRegistry().add_text(TEMPLATE, source="spx_post.toml")


def _provisioner(**options: object) -> RelProvisioner:
    table = {"url": "mysql://node:s3cret-pw@db.example:3307/app", **options}
    return RelProvisioner(StoreSettings(store="rel", options=table))


def _names(provisioner: RelProvisioner, use: TemplateUse) -> list[tuple[str, str, str]]:
    needs = StoreNeeds(role="r", store="rel", uses=(use,))
    return [(g.privilege, g.kind, g.name) for g in provisioner.grants(needs)]


def test_a_reader_may_run_the_queries_a_request_can_name(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset({Operation.FETCH}))
    assert _names(_provisioner(), use) == [
        ("EXECUTE", "function", "spx_count"),
        ("SELECT", "view", "beds_schema_migrations_v"),  # the start-up check (beds.migrations)
        ("SELECT", "view", "spx_posts_v"),
    ]


def test_a_writer_may_run_its_procedures_and_the_idempotency_ones(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset({Operation.CREATE}))
    assert _names(_provisioner(), use) == [
        ("EXECUTE", "procedure", "beds_idempotency_claim"),
        ("EXECUTE", "procedure", "beds_idempotency_complete"),
        ("EXECUTE", "procedure", "beds_idempotency_purge"),
        ("EXECUTE", "procedure", "beds_idempotency_start"),
        ("EXECUTE", "procedure", "spx_create"),
        ("SELECT", "view", "beds_schema_migrations_v"),
    ]
    assert _names(_provisioner(idempotency=False), use) == [
        ("EXECUTE", "procedure", "spx_create"),
        ("SELECT", "view", "beds_schema_migrations_v"),
    ]


def test_a_journaled_owned_template_may_read_its_key_query_and_its_journal(
    template: Template,
) -> None:
    import attrs

    from beds.templates.model import QuerySpec

    hidden = {
        **template.queries,
        "by_id": attrs.evolve(template.queries["by_id"], internal=True),
    }
    journaled = attrs.evolve(
        template,
        queries=hidden,
        capabilities=attrs.evolve(template.capabilities, journal=True),
        access=attrs.evolve(template.access, owner="author"),
    )
    assert isinstance(hidden["by_id"], QuerySpec)
    use = TemplateUse(template=journaled, operations=frozenset({Operation.CREATE}))
    names = {name for _, _, name in _names(_provisioner(idempotency=False), use)}
    assert names == {
        "spx_create",
        "spx_posts_v",
        "beds_journal_append",
        "beds_journal_v",
        "beds_schema_migrations_v",
    }


def test_handler_code_may_call_every_object_internal_queries_too(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset(), handled=True)
    names = {name for _, _, name in _names(_provisioner(idempotency=False), use)}
    assert names == {
        "spx_create",
        "spx_delete",
        "spx_posts_v",
        "spx_count",
        "spx_secret",
        "beds_schema_migrations_v",
    }


def test_statements_hold_no_password_and_require_tls_with_a_tls_table(template: Template) -> None:
    use = TemplateUse(template=template, operations=frozenset({Operation.FETCH}))
    provisioner = _provisioner(tls={})
    grants = provisioner.grants(StoreNeeds(role="reader", store="rel", uses=(use,)))
    account = StoreAccount(role="reader", user="beds-dev-reader", grants=grants, host="10.0.%")
    assert provisioner.statements(account) == [
        "CREATE USER IF NOT EXISTS 'beds-dev-reader'@'10.0.%' IDENTIFIED BY '***' REQUIRE SSL;",
        "GRANT EXECUTE ON FUNCTION `app`.`spx_count` TO 'beds-dev-reader'@'10.0.%';",
        "GRANT SELECT ON `app`.`beds_schema_migrations_v` TO 'beds-dev-reader'@'10.0.%';",
        "GRANT SELECT ON `app`.`spx_posts_v` TO 'beds-dev-reader'@'10.0.%';",
    ]
    assert "REQUIRE" not in _provisioner().statements(account)[0]
    assert provisioner.url_for(account, "p@ss/word") == (
        "mysql://beds-dev-reader:p%40ss%2Fword@db.example:3307/app"
    )
    assert provisioner.user == "node"


def test_show_grants_is_parsed_into_privileges() -> None:
    lines = [
        "GRANT `probe_role` TO `u`@`127.0.0.1`",
        "GRANT USAGE ON *.* TO `u`@`127.0.0.1` IDENTIFIED BY PASSWORD '*0E3F62' REQUIRE SSL",
        "GRANT SELECT, SHOW VIEW ON `db`.* TO `u`@`127.0.0.1` WITH GRANT OPTION",
        "GRANT SELECT (`a`, `b`), INSERT ON `db`.`t` TO `u`@`127.0.0.1`",
        "GRANT EXECUTE ON PROCEDURE `db`.`P` TO `u`@`127.0.0.1`",
        "GRANT PROXY ON ''@'%' TO 'u'@'127.0.0.1'",
        "SET DEFAULT ROLE `probe_role` FOR `u`@`127.0.0.1`",
    ]
    held, requires_tls = parse_grants(lines)
    assert requires_tls
    assert [str(item) for item in held] == [
        "EXECUTE ON PROCEDURE `db`.`P`",
        "GRANT OPTION ON `db`.*",
        "INSERT ON `db`.`t`",
        "PROXY ON ''@'%'",
        "SELECT ON `db`.*",
        "SELECT (`a`, `b`) ON `db`.`t`",
        "SHOW VIEW ON `db`.*",
        "role `probe_role`",
    ]
    # Routine names are compared as MariaDB does: without case.
    assert Held("EXECUTE", "PROCEDURE `db`.`p`").key() == held[0].key()
    assert not parse_grants(lines[1:2][0].replace(" REQUIRE SSL", "").splitlines())[1]


def test_the_native_password_hash_is_mariadbs() -> None:
    # SELECT PASSWORD('pw123') on MariaDB 10.11
    assert _native_hash("pw123") == "*0E3F627084AC4D30F4C5CE29E94187DCD60A7F21"


def test_the_plugin_provisions_the_rel_store_only() -> None:
    settings = StoreSettings(store="rel", options={"url": "mysql://u@h/db"})
    assert isinstance(plugin.beds_store_provisioner(settings), RelProvisioner)
    other = StoreSettings(store="rec", options={"database": "x"})
    assert plugin.beds_store_provisioner(other) is None
