"""REL long operations and tickets without a server: bindings checked at prepare, rows, grants."""

from __future__ import annotations

import datetime as dt

import pytest

from beds.calgon.tickets import LongOperationRunner, TicketState, TicketStore
from beds.envelopes import Operation
from beds.errors import TemplateError
from beds.namaste import StoreSettings
from beds.provision.needs import StoreNeeds, TemplateUse
from beds.templates import Template, parse_template
from beds_rel.adapter import RelAdapter
from beds_rel.long_operations import long_call
from beds_rel.provision import RelProvisioner
from beds_rel.tickets import CALLS, ticket_of

HEAD = """
name = "spx_post"
store = "rel"
tla = "spx"
key = ["id"]
[fields.id]
type = "int"
[queries.by_id]
params = ["id"]
view = "spx_posts_v"

[long_operations.stats]
steps = 4
[long_operations.stats.params.days]
type = "int"
default = 30
[long_operations.stats.params.filter]
type = "json"
required = false
nullable = true
[long_operations.stats.params.author]
type = "str"
default = "ann"
"""


def template(binding: str) -> Template:
    return parse_template(HEAD.replace("steps = 4\n", f"steps = 4\n{binding}\n"), source="p.toml")


def adapter() -> RelAdapter:
    return RelAdapter.from_settings(
        StoreSettings(store="rel", options={"url": "mysql://root@127.0.0.1:1/none"})
    )


def test_the_adapter_keeps_tickets_and_runs_long_operations() -> None:
    rel = adapter()
    assert isinstance(rel, TicketStore)
    assert isinstance(rel, LongOperationRunner)
    assert "long_operations" in rel.features


def test_a_long_operation_calls_its_procedure_with_params_then_step_and_steps() -> None:
    declared = template('procedure = "spx_stats"')
    call = long_call(declared, declared.long_operations["stats"])
    assert call.sql == "CALL `spx_stats`(%s, %s, %s, %s, %s)"
    assert call.params == ("days", "filter", "author", "step", "steps")
    assert call.arity == 5
    assert call.modes == ("IN",) * 5
    assert call.json_at == frozenset({1})  # the json param goes as JSON text
    rel = adapter()
    rel.prepare(declared)
    assert rel.long_operation_calls(declared) == [call]


@pytest.mark.parametrize(
    ("binding", "message"),
    [
        ("", "p.toml: long_operations.stats must name its stored procedure (procedure = ...)"),
        (
            'pipeline = [{"$match" = {}}]',
            "p.toml: long_operations.stats.pipeline is not a REL binding of a long operation",
        ),
        (
            'procedure = "spx stats; DROP"',
            "long_operations.stats.procedure must be an identifier",
        ),
        ("procedure = 7", "long_operations.stats.procedure must be an identifier"),
        (
            'procedure = "abc_stats"',
            "long_operations.stats.procedure 'abc_stats' must start with the template's TLA "
            "prefix 'spx_'",
        ),
    ],
)
def test_prepare_refuses_a_bad_binding_naming_its_key(binding: str, message: str) -> None:
    declared = template(binding)
    rel = adapter()
    with pytest.raises(TemplateError) as caught:
        rel.prepare(declared)
    assert str(caught.value).startswith(f"template 'spx_post': {message}")


def test_the_ticket_procedures_are_beds_rels_own() -> None:
    assert [call.name for call in CALLS] == [
        "beds_ticket_record",
        "beds_ticket_read",
        "beds_ticket_claim",
        "beds_ticket_renew",
        "beds_ticket_save_step",
        "beds_ticket_finish",
        "beds_ticket_cancel",
        "beds_ticket_results",
        "beds_ticket_purge",
    ]
    for call in CALLS:
        assert call.sql == f"CALL `{call.name}`({', '.join(['%s'] * len(call.params))})"
        assert call.arity == len(call.params)


def test_a_role_serving_long_operations_may_run_them_and_the_ticket_procedures() -> None:
    provisioner = RelProvisioner(
        StoreSettings(store="rel", options={"url": "mysql://node:pw@db.example/app"})
    )
    declared = template('procedure = "spx_stats"')
    reader = TemplateUse(template=declared, operations=frozenset({Operation.FETCH}))
    grants = provisioner.grants(
        StoreNeeds(role="r", store="rel", uses=(reader,), keeps_tickets=True)
    )
    names = {(g.privilege, g.kind, g.name): g.reasons for g in grants}
    assert names == {
        ("SELECT", "view", "spx_posts_v"): ("spx_post query by_id",),
        ("EXECUTE", "procedure", "spx_stats"): ("spx_post long operation stats",),
        **{("EXECUTE", "procedure", call.name): ("CALGON tickets",) for call in CALLS},
        ("SELECT", "view", "beds_tickets_v"): ("CALGON tickets",),
        ("SELECT", "view", "beds_schema_migrations_v"): ("schema migrations check",),
    }
    plain = parse_template(HEAD.split("\n[long_operations")[0], source="p.toml")
    use = TemplateUse(template=plain, operations=frozenset({Operation.FETCH}))
    grants = provisioner.grants(StoreNeeds(role="r", store="rel", uses=(use,)))
    # No long operation: no tickets.
    assert [g.name for g in grants] == ["beds_schema_migrations_v", "spx_posts_v"]
    elsewhere = provisioner.grants(StoreNeeds(role="r", store="rel", uses=(reader,)))
    assert not {g.name for g in elsewhere} & {call.name for call in CALLS}  # calgon.store: rec


def test_a_tickets_row_reads_as_a_ticket_with_unix_seconds() -> None:
    row = {
        "ticket_id": "0b6c3f4e-2f1a-4c9e-9a57-5d1f0e7b4a21",
        "template": "spx_post",
        "operation": "stats",
        "params": b'{"days":7,"note":"na\xc3\xafve"}',  # a LONGTEXT may arrive as bytes
        "state": "failed",
        "principal": None,
        "idempotency_key": None,
        "fingerprint": "",
        "event_id": "ev-1",
        "depth": 1,
        "steps": 4,
        "lane": "warehouse",
        "steps_done": 2,
        "attempts": 1,
        "cancel_requested": 0,
        "lease_owner": "",
        "lease_until": None,
        "created_at": dt.datetime(2027, 1, 15, 8, 0, 0, 123456),
        "started_at": dt.datetime(2027, 1, 15, 8, 0, 1),
        "finished_at": dt.datetime(2027, 1, 15, 8, 0, 2),
        "expires_at": dt.datetime(2027, 1, 16, 8, 0, 2),
        "error": '{"code":"BEDS-502","message":"m","details":[]}',
    }
    ticket = ticket_of(row)
    assert ticket.params == {"days": 7, "note": "naïve"}
    assert ticket.state is TicketState.FAILED
    assert ticket.created_at == 1_800_000_000.123456
    assert ticket.started_at == 1_800_000_001.0
    assert ticket.expires_at == 1_800_086_402.0
    assert ticket.lease_until is None
    assert ticket.lane == "warehouse"
    assert ticket.cancel_requested is False
    assert ticket.error == {"code": "BEDS-502", "message": "m", "details": []}
