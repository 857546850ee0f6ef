"""Retention: ``retention_days`` and ``[retention]`` declared, the sweep synthesized, scheduled.

Declarations refused (each naming file and key) and accepted; the ``retention`` long operation
the loader adds and its binding; the scheduler recording one ticket per template per interval
however many nodes run it (two schedulers on one memory ticket store), with ``before`` = now
minus the retention; the sweep run by the CALGON workers until a step retires nothing; the IPL
starting the ticket store on a role that schedules sweeps. The REL sweep, and a sweep killed
half-way: tests/integration/rel/test_rel_retention.py, tests/integration/calgon/
test_retention_kill.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pluggy
import pytest
import tomlkit
from loguru import logger

from beds import hookimpl
from beds.calgon.retention import (
    PRINCIPAL,
    RetentionScheduler,
    retention_ticket,
    swept_templates,
)
from beds.calgon.tickets import WAREHOUSE_LANE, TicketState
from beds.config import Config, load_config
from beds.config.model import CalgonSettings
from beds.errors import StoreUnavailable, TemplateError
from beds.ipl import Ipl
from beds.lineage import Event
from beds.plugins import make_plugin_manager
from beds.registry import AdapterRegistry, TemplateRegistry
from beds.templates import Template, parse_template
from beds.templates.model import FieldType
from beds.testing import MemoryAdapter, TestIdentity
from beds.testing.local import LocalNode

IDENTITY = TestIdentity(env="test")
DAY = 86_400.0
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

NOTE: dict[str, Any] = {
    "name": "note",
    "store": "memory",
    "tla": "not",
    "key": ["id"],
    "fields": {
        "id": {"type": "int", "generated": True},
        "body": {"type": "str", "max_length": 50},
        "created_at": {"type": "datetime", "generated": True},
    },
    "operations": {"create": {"params": ["body"], "returns": ["id"]}},
    "queries": {"by_id": {"params": ["id"], "max_limit": 1}},
    "capabilities": {"retention_days": 30},
    "retention": {"field": "created_at", "batch_size": 2, "procedure": "not_retire"},
    "access": {"submit": ["admin"]},
}


def template(declaration: dict[str, Any] | None = None, **changes: Any) -> Template:
    return parse_template(tomlkit.dumps({**(declaration or NOTE), **changes}), source="note.toml")


def refused(**changes: Any) -> str:
    with pytest.raises(TemplateError) as caught:
        template(**changes)
    message = str(caught.value)
    assert message.startswith("template 'note': note.toml: ")
    return message.removeprefix("template 'note': note.toml: ")


# -- declarations ------------------------------------------------------------------------------


def test_a_template_with_retention_gets_the_sweep_as_a_long_operation() -> None:
    note = template()
    assert note.capabilities.retention_days == 30
    assert note.retention is not None
    assert (note.retention.days, note.retention.field, note.retention.batch_size) == (
        30,
        "created_at",
        2,
    )
    assert note.retention.binding == {"procedure": "not_retire"}
    sweep = note.long_operations["retention"]
    assert (sweep.name, sweep.steps) == ("retention", 0)
    assert list(sweep.params) == ["before", "limit"]  # the order the store object takes them
    before, limit = sweep.params["before"], sweep.params["limit"]
    assert (before.field.type, before.field.required, before.default) == (
        FieldType.DATETIME,
        True,
        None,
    )
    assert (limit.field.type, limit.default, limit.field.minimum, limit.field.maximum) == (
        FieldType.INT,
        2,
        1,
        10_000,
    )
    assert sweep.binding == {"procedure": "not_retire", "retention": {"field": "created_at"}}
    assert "long_operations" in note.needs()


def test_the_batch_size_defaults_to_a_thousand_and_the_store_keys_are_the_adapters() -> None:
    note = template(retention={"field": "created_at", "cool_collection": "not_cool"})
    assert note.retention is not None
    assert note.retention.batch_size == 1000
    assert note.long_operations["retention"].params["limit"].default == 1000
    assert note.long_operations["retention"].binding == {
        "cool_collection": "not_cool",
        "retention": {"field": "created_at"},
    }


def test_a_template_without_retention_has_no_sweep() -> None:
    note = template({k: v for k, v in NOTE.items() if k not in ("capabilities", "retention")})
    assert note.retention is None
    assert note.capabilities.retention_days is None
    assert note.long_operations == {}


@pytest.mark.parametrize("days", [0, 36_501, -1, 1.5, "30", True])
def test_retention_days_is_a_whole_number_of_days(days: object) -> None:
    assert refused(capabilities={"retention_days": days}) == (
        "capabilities.retention_days must be a whole number of days from 1 to 36500"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"retention": None},
            "capabilities.retention_days needs a [retention] table: field (the record's age)",
        ),
        ({"capabilities": {}}, "retention is set without capabilities.retention_days"),
        ({"retention": {"procedure": "not_retire"}}, "retention.field is required"),
        ({"retention": {"field": 5}}, "retention.field must be a string"),
        (
            {"retention": {"field": "updated_at"}},
            "retention.field must name a declared datetime field, got 'updated_at'",
        ),
        (
            {"retention": {"field": "body"}},
            "retention.field must name a declared datetime field, got 'body'",
        ),
        (
            {"retention": {"field": "created_at", "batch_size": 0}},
            "retention.batch_size must be from 1 to 10000",
        ),
        (
            {"retention": {"field": "created_at", "batch_size": 10_001}},
            "retention.batch_size must be from 1 to 10000",
        ),
        (
            {"retention": {"field": "created_at", "batch_size": "big"}},
            "retention.batch_size must be a non-negative integer",
        ),
        ({"retention": "created_at"}, "retention must be a table"),
    ],
)
def test_bad_retention_declarations_are_refused_naming_the_key(
    changes: dict[str, Any], message: str
) -> None:
    declaration = {k: v for k, v in {**NOTE, **changes}.items() if v is not None}
    with pytest.raises(TemplateError) as caught:
        template(declaration)
    assert str(caught.value).startswith(f"template 'note': note.toml: {message}")


@pytest.mark.parametrize("with_retention", [True, False])
def test_a_declared_long_operation_named_retention_is_refused(with_retention: bool) -> None:
    declaration = dict(NOTE, long_operations={"retention": {"steps": 0}})
    if not with_retention:
        declaration = {
            k: v for k, v in declaration.items() if k not in ("capabilities", "retention")
        }
    with pytest.raises(TemplateError) as caught:
        template(declaration)
    assert str(caught.value).startswith(
        "template 'note': note.toml: long_operations.retention is the name of the retention "
        "sweep BEDS runs"
    )


# -- the tickets -------------------------------------------------------------------------------


def test_a_sweeps_ticket_retires_what_is_older_than_the_retention() -> None:
    ticket = retention_ticket(template(), NOW, 3600.0, "seg1", "test")
    assert (ticket.template, ticket.operation, ticket.principal, ticket.steps) == (
        "note",
        "retention",
        PRINCIPAL,
        0,
    )
    before = dt.datetime.fromisoformat(ticket.params["before"])
    assert before == dt.datetime.fromtimestamp(NOW - 30 * DAY, dt.UTC)
    assert ticket.params == {"before": "2026-12-16T08:00:00Z", "limit": 2}
    assert ticket.idempotency_key == f"retention:note:{int(NOW // 3600)}"
    assert ticket.event_id.startswith("seg1.test.")
    assert (ticket.state, ticket.created_at) == (TicketState.QUEUED, NOW)
    plain = {k: v for k, v in NOTE.items() if k not in ("capabilities", "retention")}
    with pytest.raises(ValueError, match="has no retention"):
        retention_ticket(template(plain), NOW, 3600.0, "seg1", "test")


class Sink:
    """An event sink that keeps what it is given."""

    token = 0

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    async def publish_now(self, *events: Event) -> None:
        self.events.extend(events)


def scheduler(
    store: MemoryAdapter,
    templates: list[Template],
    node: str = "seg1",
    *,
    interval: float = 3600.0,
    events: Sink | None = None,
    wake: Callable[[], None] | None = None,
) -> RetentionScheduler:
    return RetentionScheduler(
        store,
        {t.name: t for t in templates},
        CalgonSettings(retention_interval=interval),
        node=node,
        env="test",
        events=events,
        wake=wake,
    )


def other_note() -> Template:
    return template(name="memo", tla="mem", retention={"field": "created_at", "batch_size": 5})


async def test_two_nodes_record_one_ticket_per_template_per_interval() -> None:
    store = MemoryAdapter("memory")
    note, memo = template(), other_note()
    sink, woken = Sink(), []
    first = scheduler(store, [note, memo], "seg1", events=sink, wake=lambda: woken.append(1))
    second = scheduler(store, [note, memo], "seg2", events=sink)

    one = await first.schedule(NOW)
    two = await second.schedule(NOW + 60)  # later, in the same interval
    assert sorted(one) == sorted(two) == ["memo", "note"]
    assert {t.ticket_id for t in one.values()} == {t.ticket_id for t in two.values()}
    assert len(store.tickets) == 2
    assert {t.params["limit"] for t in store.tickets.values()} == {2, 5}
    assert len(woken) == 2, "the recording node's workers are told, once per new ticket"
    assert [(e.kind, e.node, e.template) for e in sink.events] == [
        ("log", "seg1", "note"),
        ("log", "seg1", "memo"),
    ]
    assert sink.events[0].event_id == one["note"].event_id  # the steps' events hang under it

    # The next interval: the first sweeps finished, so each template gets a new ticket.
    for ticket in list(store.tickets.values()):
        await store.finish_ticket(
            ticket.ticket_id, None, TicketState.SUCCEEDED, None, NOW, NOW + 1000
        )
    later = await second.schedule(NOW + 3600)
    assert len(store.tickets) == 4
    assert later["note"].ticket_id != one["note"].ticket_id
    assert later["note"].params["before"] == "2026-12-16T09:00:00Z"
    assert await first.schedule(NOW + 3700) == later


async def test_a_sweep_still_running_holds_back_the_next_one() -> None:
    store = MemoryAdapter("memory")
    node = scheduler(store, [template()])
    first = await node.schedule(NOW)
    claimed = await store.claim_ticket("seg1", 30.0, NOW, WAREHOUSE_LANE)
    assert claimed is not None
    assert claimed.ticket_id == first["note"].ticket_id
    assert await node.schedule(NOW + 3600) == {"note": claimed}, "the running one, not a new one"
    assert len(store.tickets) == 1
    await store.finish_ticket(
        claimed.ticket_id, "seg1", TicketState.FAILED, None, NOW + 3700, NOW + 9000
    )
    again = await node.schedule(NOW + 3800)
    assert again["note"].ticket_id != claimed.ticket_id, "a failed sweep is followed by a new one"
    assert len(store.tickets) == 2


class Flaky(MemoryAdapter):
    """A ticket store that is away for the first ``failures`` tickets it is asked to record."""

    def __init__(self, failures: int) -> None:
        super().__init__("memory")
        self.failures = failures

    async def record_ticket(self, ticket: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the ticket store is away")
        return await super().record_ticket(ticket)


async def test_a_ticket_that_cannot_be_recorded_is_left_out_and_tried_again() -> None:
    store = Flaky(failures=1)
    node = scheduler(store, [template(), other_note()])
    assert sorted(await node.schedule(NOW)) == ["memo"]
    assert sorted(await node.schedule(NOW + 30)) == ["memo", "note"]
    assert len(store.tickets) == 2


async def test_the_scheduler_runs_a_round_at_start_then_every_interval() -> None:
    store = MemoryAdapter("memory")
    node = scheduler(store, [template()], interval=0.2)
    node.start()
    try:
        await until(lambda: len(store.tickets) == 1, "the first round")
        await asyncio.sleep(0.5)
        assert len(store.tickets) == 1, "no second sweep while the first has not run"
        [ticket] = store.tickets.values()
        await store.finish_ticket(
            ticket.ticket_id, None, TicketState.SUCCEEDED, None, NOW, NOW + 1000
        )
        await until(lambda: len(store.tickets) == 2, "the next interval's round")
    finally:
        await node.stop()
    count = len(store.tickets)
    await asyncio.sleep(0.5)
    assert len(store.tickets) == count, "a stopped scheduler records nothing"


async def until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:g} s")
        await asyncio.sleep(0.02)


async def test_the_workers_run_a_sweep_batch_by_batch_until_nothing_is_left() -> None:
    store = MemoryAdapter("memory")
    note = template()
    ages = [NOW - days * DAY for days in (40, 35, 31, 31, 29, 1)]
    seen: list[tuple[dt.datetime, int, int]] = []

    async def retire(params: Any, step: int, steps: int) -> list[dict[str, Any]]:
        seen.append((params["before"], params["limit"], steps))
        cutoff = params["before"].timestamp()
        old = sorted(a for a in ages if a < cutoff)[: params["limit"]]
        for age in old:
            ages.remove(age)
        return [{"retired": len(old)}] if old else []

    store.long_operations["note", "retention"] = retire
    local = LocalNode([note], {"memory": store}, identity=IDENTITY, tickets=store)
    swept = await scheduler(store, [note]).schedule(NOW)
    assert swept["note"].lane == WAREHOUSE_LANE
    assert local.workers is not None
    assert local.warehouse is not None
    assert not await local.workers.run_one(), "a default-lane worker never takes a sweep"
    assert await local.warehouse.run_one()
    assert local.warehouse.retired == {"note": 4}, "the batches' retired counts, added up"
    assert sorted(ages) == [NOW - 29 * DAY, NOW - DAY], "only what is older than 30 days went"
    assert {(limit, steps) for _, limit, steps in seen} == {(2, 0)}
    assert seen[0][0] == dt.datetime.fromtimestamp(NOW - 30 * DAY, dt.UTC)
    done = await local.call(
        "note", "ticket", {"ticket": swept["note"].ticket_id}, who="root", roles=("admin",)
    )
    assert done.data["state"] == "succeeded"
    assert (done.data["steps"], done.data["steps_done"]) == (0, 3)
    assert done.data["result"] == [{"retired": 2}, {"retired": 2}]
    hidden = await local.call("note", "ticket", {"ticket": swept["note"].ticket_id}, who="ann")
    assert hidden.error is not None
    assert hidden.error.code == "BEDS-404", "only admins read it"


async def test_only_an_admin_submits_a_sweep_by_hand() -> None:
    store = MemoryAdapter("memory")
    local = LocalNode([template()], {"memory": store}, identity=IDENTITY, tickets=store)
    before = dt.datetime.fromtimestamp(NOW, dt.UTC).isoformat()
    payload = {"operation": "retention", "params": {"before": before}}
    member = await local.call("note", "submit", payload, who="ann", roles=("member",))
    assert member.error is not None
    assert member.error.code == "BEDS-403"
    anonymous = await local.call("note", "submit", payload, who=None)
    assert anonymous.error is not None
    assert anonymous.error.code in ("BEDS-401", "BEDS-403")  # the access rule may say first
    assert not store.tickets
    admin = await local.call("note", "submit", payload, who="root", roles=("admin",))
    assert admin.status == 202, admin.error
    assert admin.data["lane"] == WAREHOUSE_LANE, "a sweep by hand runs where scheduled ones do"


# -- which nodes schedule, and the IPL ---------------------------------------------------------

ROLE = """schema_version = 1
[node]
role = "{role}"
[lineage]
enabled = false
[calgon]
store = "memory"
[roles.{role}.brokers.whBroker]
[roles.{role}.brokers.other]
[stores.memory]
url = "mem://main"
"""


@pytest.fixture
def configs(tmp_path: Path) -> Callable[[str], Config]:
    def build(role: str) -> Config:
        path = tmp_path / f"{role}.toml"
        text = ROLE.format(role=role)
        if role != "segundo":
            text = text.replace(f"[roles.{role}.brokers.whBroker]\n", "")
        path.write_text(text, encoding="utf-8")
        return load_config(path, environ={})

    return build


def test_only_nodes_with_the_retention_broker_sweep_and_only_templates_with_retention(
    configs: Callable[[str], Config],
) -> None:
    plain = template(
        {k: v for k, v in NOTE.items() if k not in ("capabilities", "retention")}, name="plain"
    )
    templates = {"note": template(), "plain": plain, "memo": other_note()}
    assert list(swept_templates(configs("segundo"), templates)) == ["memo", "note"]
    assert swept_templates(configs("tester"), templates) == {}


class Domain:
    def __init__(self, templates: list[Template]) -> None:
        self.templates = templates
        self.adapter: MemoryAdapter | None = None

    def build(self, settings: Any) -> MemoryAdapter:
        self.adapter = MemoryAdapter(settings.store)
        return self.adapter

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="memory", factory=self.build)

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        for declared in self.templates:
            registry.add(declared)


def plugins(domain: Domain) -> pluggy.PluginManager:
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(domain, name="domain")
    return pm


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The IPL logs through loguru: leave it as the other tests expect."""
    yield
    logger.remove()
    logger.disable("beds")


async def test_a_node_that_sweeps_starts_the_ticket_store_though_it_serves_no_template(
    configs: Callable[[str], Config],
) -> None:
    domain = Domain([template()])
    ipl = Ipl(configs("segundo"), plugin_manager=plugins(domain))
    ipl.load_plugins(every_store=False)
    assert list(ipl.templates) == ["note"], "prepared for the sweeps its whBroker runs"
    assert ipl.ticket_store is domain.adapter is not None
    await ipl.verify_templates()
    assert ("ticket store objects", "ok") in [(c.name, c.status) for c in ipl.checks]

    elsewhere = Domain([template()])
    other = Ipl(configs("tester"), plugin_manager=plugins(elsewhere))
    other.load_plugins(every_store=False)
    assert other.ticket_store is None
    assert elsewhere.adapter is None
