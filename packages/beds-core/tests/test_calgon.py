"""CALGON in the node, against the in-memory reference adapter: submit, ticket, run, page, cancel.

The workers run when a test says (``node.workers.run_one()``), so every state is observed; the
real stores run the same paths in the integration tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import tomlkit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beds.config.model import CalgonSettings
from beds.envelopes import Response
from beds.errors import StoreError, StoreUnavailable, TemplateError
from beds.templates import Template, parse_template
from beds.testing import MemoryAdapter, TestIdentity
from beds.testing.local import LocalNode

IDENTITY = TestIdentity(env="test")

POST: dict[str, Any] = {
    "name": "post",
    "store": "memory",
    "tla": "pst",
    "key": ["id"],
    "fields": {
        "id": {"type": "int", "generated": True},
        "author": {"type": "str", "max_length": 20},
        "body": {"type": "str", "max_length": 50},
    },
    "operations": {"create": {"params": ["author", "body"], "returns": ["id"]}},
    "queries": {"by_id": {"params": ["id"], "max_limit": 1}},
    "long_operations": {
        "stats": {
            "steps": 4,
            "description": "Posts per author",
            "params": {
                "days": {"type": "int", "default": 30, "minimum": 1, "maximum": 366},
                "author": {"type": "str", "required": False, "nullable": True},
            },
        },
        "everything": {"params": {}},
    },
    "access": {"submit": ["member", "admin"]},
}


def template(declaration: dict[str, Any] | None = None, **changes: Any) -> Template:
    return parse_template(tomlkit.dumps({**(declaration or POST), **changes}), source="post.toml")


class Node(LocalNode):
    def __init__(self, store: MemoryAdapter | None = None, **settings: Any) -> None:
        self.store = store or MemoryAdapter("memory")
        super().__init__(
            [template()],
            {"memory": self.store},
            identity=IDENTITY,
            tickets=self.store,
            calgon=CalgonSettings(**settings),
        )

    async def run(self) -> int:
        """Run every waiting ticket; return how many ran."""
        assert self.workers is not None
        ran = 0
        while await self.workers.run_one():
            ran += 1
        return ran


def code(response: Response) -> str | None:
    return response.error.code if response.error is not None else None


def details(response: Response) -> tuple[str, ...]:
    return tuple(response.error.details) if response.error is not None else ()


async def seeded(posts: int = 10) -> Node:
    node = Node()
    for n in range(posts):
        author = ("ann", "bob")[n % 2]
        created = await node.call("post", "create", {"author": author, "body": f"p{n}"})
        assert created.ok
    return node


# -- submit, run, read -------------------------------------------------------------------------


async def test_submit_answers_a_ticket_at_once_and_the_work_runs_later() -> None:
    node = await seeded()
    submitted = await node.call("post", "submit", {"operation": "stats", "params": {}})
    assert submitted.status == 202
    ticket = submitted.data
    assert ticket["state"] == "queued"
    assert ticket["params"] == {"days": 30, "author": None}  # every default applied
    assert ticket["steps"] == 4
    assert ticket["progress"] == 0
    assert uuid.UUID(ticket["ticket"]).version == 4
    assert ticket["event_id"] == submitted.meta.event_id
    assert node.store.calls.count(("run_step", "post")) == 0
    assert await node.run() == 1
    done = await node.call("post", "ticket", {"ticket": ticket["ticket"]})
    assert done.ok, done.error
    assert done.data["state"] == "succeeded"
    assert done.data["progress"] == 1
    assert done.data["attempts"] == 1
    assert done.data["finished_at"] >= done.data["started_at"] >= done.data["created_at"]
    assert sorted(r["body"] for r in done.data["result"]) == [f"p{n}" for n in range(10)]
    assert done.meta.next is None


async def test_progress_strictly_increases_step_by_step() -> None:
    node = Node()
    seen: list[float] = []

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        ticket = await node.call("post", "ticket", {"ticket": submitted.data["ticket"]})
        seen.append(ticket.data["progress"])
        assert ticket.data["state"] == "running"
        return [{"step": number, "of": steps}]

    node.store.long_operations["post", "stats"] = step
    submitted = await node.call("post", "submit", {"operation": "stats"})
    await node.run()
    assert seen == [0, 0.25, 0.5, 0.75]
    done = await node.call("post", "ticket", {"ticket": submitted.data["ticket"]})
    assert done.data["result"] == [{"step": n, "of": 4} for n in range(4)]


async def test_a_large_result_is_paged_with_signed_cursors() -> None:
    node = Node(page_size=10)

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        return [{"n": number * 100 + i} for i in range(7)]

    node.store.long_operations["post", "stats"] = step
    ticket = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    await node.run()
    got: list[int] = []
    payload: dict[str, Any] = {"ticket": ticket}
    pages = 0
    while True:
        page = await node.call("post", "ticket", payload)
        assert page.ok, page.error
        got += [r["n"] for r in page.data["result"]]
        pages += 1
        if page.meta.next is None:
            break
        payload = {"ticket": ticket, "cursor": page.meta.next}
    assert got == [s * 100 + i for s in range(4) for i in range(7)]
    assert pages == 3
    first = await node.call("post", "ticket", {"ticket": ticket, "limit": 5})
    assert first.meta.next is not None
    forged = first.meta.next[:-2] + ("AA" if not first.meta.next.endswith("AA") else "BB")
    assert code(await node.call("post", "ticket", {"ticket": ticket, "cursor": forged})) == (
        "BEDS-400"
    )
    other = (await node.call("post", "submit", {"operation": "everything"})).data["ticket"]
    await node.run()
    borrowed = await node.call("post", "ticket", {"ticket": other, "cursor": first.meta.next})
    assert code(borrowed) == "BEDS-400"
    assert code(await node.call("post", "ticket", {"ticket": ticket, "limit": 11})) == "BEDS-422"


async def test_a_result_larger_than_a_message_is_split_by_size() -> None:
    node = Node()

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        return [{"blob": "x" * 100_000, "n": i} for i in range(6)]

    node.store.long_operations["post", "everything"] = step
    ticket = (await node.call("post", "submit", {"operation": "everything"})).data["ticket"]
    await node.run()
    seen: list[int] = []
    payload: dict[str, Any] = {"ticket": ticket}
    while True:
        page = await node.call("post", "ticket", payload)
        assert page.ok
        assert len(page.data["result"]) < 6  # one message of the default limit cannot hold all
        seen += [r["n"] for r in page.data["result"]]
        if page.meta.next is None:
            break
        payload["cursor"] = page.meta.next
    assert seen == list(range(6))


# -- who sees what ----------------------------------------------------------------------------


async def test_a_ticket_is_its_submitters_and_admins() -> None:
    node = await seeded(2)
    ticket = (await node.call("post", "submit", {"operation": "everything"})).data["ticket"]
    assert (await node.call("post", "ticket", {"ticket": ticket})).ok
    foreign = await node.call("post", "ticket", {"ticket": ticket}, who="bob")
    unknown = await node.call("post", "ticket", {"ticket": str(uuid.uuid4())})
    assert code(foreign) == code(unknown) == "BEDS-404"
    assert foreign.error is not None
    assert unknown.error is not None
    assert foreign.error.message == unknown.error.message  # nothing tells them apart
    admin = await node.call("post", "ticket", {"ticket": ticket}, who="root", roles=["admin"])
    assert admin.ok
    by_id = await node.call("beds_ticket", "ticket", {"ticket": ticket})
    assert by_id.ok
    assert by_id.data["template"] == "post"
    cancel_foreign = await node.call(
        "post", "ticket", {"ticket": ticket, "cancel": True}, who="bob"
    )
    assert code(cancel_foreign) == "BEDS-404"


async def test_submit_follows_the_templates_access_rules() -> None:
    node = Node()
    refused = await node.call("post", "submit", {"operation": "stats"}, roles=["reader"])
    assert code(refused) == "BEDS-403"
    anonymous = await node.call("post", "submit", {"operation": "stats"}, who=None)
    assert code(anonymous) == "BEDS-401"
    assert not node.store.tickets


# -- keys, cancel, failures -------------------------------------------------------------------


async def test_a_repeated_submit_with_a_key_answers_the_same_ticket() -> None:
    node = Node()
    payload = {"operation": "stats", "params": {"days": 7}}
    first = await node.call("post", "submit", payload, idempotency_key="k1")
    again = await node.call("post", "submit", payload, idempotency_key="k1")
    assert first.data["ticket"] == again.data["ticket"]
    other = await node.call("post", "submit", {"operation": "stats"}, idempotency_key="k1")
    assert code(other) == "BEDS-409K"
    assert first.data["ticket"] in details(other)[0]
    bob = await node.call("post", "submit", payload, idempotency_key="k1", who="bob")
    assert bob.data["ticket"] != first.data["ticket"]  # keys are each principal's own
    assert len(node.store.tickets) == 2


async def test_cancel_stops_a_queued_or_running_ticket_never_a_finished_one() -> None:
    node = Node()
    queued = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    cancelled = await node.call("post", "ticket", {"ticket": queued, "cancel": True})
    assert cancelled.data["state"] == "cancelled"
    again = await node.call("post", "ticket", {"ticket": queued, "cancel": True})
    assert code(again) == "BEDS-409F"
    assert await node.run() == 0

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        if number == 1:  # the caller cancels while step 1 runs
            asked = await node.call("post", "ticket", {"ticket": running, "cancel": True})
            assert asked.data["state"] == "running"
            assert asked.data["cancel_requested"]
        return [{"n": number}]

    node.store.long_operations["post", "stats"] = step
    running = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    await node.run()
    stopped = await node.call("post", "ticket", {"ticket": running})
    assert stopped.data["state"] == "cancelled"
    assert stopped.data["steps_done"] == 2  # it stops after the step that was running
    assert "result" not in stopped.data


async def test_a_failing_step_fails_the_ticket_with_its_code() -> None:
    node = Node()

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        raise StoreError("the procedure said no", details=("procedure pst_stats",))

    node.store.long_operations["post", "stats"] = step
    ticket = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    await node.run()
    failed = await node.call("post", "ticket", {"ticket": ticket})
    assert failed.data["state"] == "failed"
    assert failed.data["error"] == {
        "code": "BEDS-502",
        "message": "the procedure said no",
        "details": ["procedure pst_stats"],
    }
    assert "result" not in failed.data


async def test_a_bug_in_a_step_fails_the_ticket_and_spares_the_worker() -> None:
    node = Node()

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        raise ZeroDivisionError("boom")

    node.store.long_operations["post", "stats"] = step
    ticket = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    await node.run()
    failed = await node.call("post", "ticket", {"ticket": ticket})
    assert failed.data["error"]["code"] == "BEDS-500"
    assert "boom" not in str(failed.data["error"])


async def test_a_transient_failure_gives_the_ticket_back_until_attempts_run_out() -> None:
    node = Node(max_attempts=2)
    calls = 0

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if number == 2:
            raise StoreUnavailable("the database is away")
        return [{"n": number}]

    node.store.long_operations["post", "stats"] = step
    ticket = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    assert node.workers is not None
    await node.workers.run_one()
    back = await node.call("post", "ticket", {"ticket": ticket})
    assert back.data["state"] == "running"  # given back: its lease ended, any node takes it
    assert back.data["steps_done"] == 2
    await node.workers.run_one()  # resumes at step 2, fails again
    await node.workers.run_one()  # a third claim is over max_attempts
    failed = await node.call("post", "ticket", {"ticket": ticket})
    assert failed.data["state"] == "failed"
    assert failed.data["error"]["code"] == "BEDS-500A"
    assert calls == 4  # steps 0, 1, 2 then 2 again: done steps are never run twice


async def test_an_expired_ticket_is_gone() -> None:
    node = Node(ticket_ttl=0.001)
    ticket = (await node.call("post", "submit", {"operation": "everything"})).data["ticket"]
    await node.run()
    await asyncio.sleep(0.01)
    assert code(await node.call("post", "ticket", {"ticket": ticket})) == "BEDS-410"


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"operation": "nope"}, "$.payload.operation: must be one of everything, stats"),
        ({}, "$.payload.operation: must be one of"),
        ({"operation": "stats", "params": {"days": 0}}, "$.payload.params.days: must be at least"),
        ({"operation": "stats", "params": {"days": "7"}}, "$.payload.params.days: must be an"),
        ({"operation": "stats", "params": {"weeks": 1}}, "$.payload.params.weeks: is not a param"),
        ({"operation": "stats", "params": []}, "$.payload.params: must be an object"),
        ({"operation": "stats", "query": "x"}, "$.payload.query: is not a submit key"),
    ],
)
async def test_a_bad_submit_is_refused_and_records_nothing(
    payload: dict[str, Any], problem: str
) -> None:
    node = Node()
    refused = await node.call("post", "submit", payload)
    assert code(refused) == "BEDS-422"
    assert any(d.startswith(problem) for d in details(refused)), details(refused)
    assert not node.store.tickets


async def test_a_template_without_long_operations_answers_405() -> None:
    plain = template(long_operations={}, access={})
    node = LocalNode([plain], {"memory": MemoryAdapter("memory")}, identity=IDENTITY)
    assert code(await node.call("post", "submit", {"operation": "stats"})) == "BEDS-405"
    assert code(await node.call("post", "ticket", {"ticket": str(uuid.uuid4())})) == "BEDS-405"


@pytest.mark.parametrize(
    "payload",
    [
        {"ticket": "not-a-uuid"},
        {"ticket": str(uuid.uuid1())},
        {"ticket": str(uuid.uuid4()).upper()},
        {},
        {"ticket": 7},
        {"ticket": str(uuid.uuid4()), "cancel": "yes"},
        {"ticket": str(uuid.uuid4()), "cursor": 3},
        {"ticket": str(uuid.uuid4()), "limit": 0},
        {"ticket": str(uuid.uuid4()), "extra": 1},
    ],
)
async def test_a_malformed_ticket_request_is_refused(payload: dict[str, Any]) -> None:
    assert code(await Node().call("post", "ticket", payload)) == "BEDS-422"


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operation=st.sampled_from(["submit", "ticket"]),
    payload=st.dictionaries(
        st.sampled_from(["operation", "params", "ticket", "cancel", "cursor", "limit", "x"]),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**63 - 1)
            | st.floats()
            | st.text(max_size=40),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
            max_leaves=8,
        ),
    ),
)
async def test_any_payload_gets_an_answer_never_a_crash(
    operation: str, payload: dict[str, Any]
) -> None:
    node = Node()
    response = await node.call("post", operation, payload)
    assert response.ok or code(response) in {"BEDS-400", "BEDS-404", "BEDS-422"}
    if operation == "ticket":
        assert not node.store.tickets


@pytest.mark.parametrize(
    ("long_operations", "message"),
    [
        ({"x": {"steps": -1}}, "long_operations.x.steps must be an integer from 0"),
        ({"x": {"steps": True}}, "long_operations.x.steps must be an integer"),
        ({"x": {"step_timeout": -1}}, "long_operations.x.step_timeout must be seconds"),
        ({"x": {"params": {"step": {"type": "int"}}}}, "long_operations.x.params.step is given"),
        ({"x": {"params": {"d": {"type": "int", "default": "7"}}}}, "params.d.default must be an"),
        ({"x": {"params": {"d": {"type": "when"}}}}, "long_operations.x.params.d.type must be"),
        ({"x": {"params": {"d": {"type": "int", "generated": True}}}}, "params.d.generated does"),
        ({"Bad-Name": {}}, "long_operations.Bad-Name name must be lower_snake_case"),
        ({"x": 3}, "long_operations.x must be a table"),
    ],
)
def test_bad_long_operations_are_refused_at_load(
    long_operations: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateError) as refused:
        template(long_operations=long_operations)
    assert message in str(refused.value)


def test_long_operations_need_a_store_that_runs_them() -> None:
    assert "long_operations" in template().needs()
    assert "long_operations" not in template(long_operations={}, access={}).needs()


async def test_an_open_ended_operation_runs_until_a_step_returns_nothing() -> None:
    batches = [[{"n": 1}, {"n": 2}], [{"n": 3}], []]
    node = Node()

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        assert steps == 0
        return batches[number]

    node.store.long_operations["post", "sweep"] = step
    open_ended = template(
        long_operations={**POST["long_operations"], "sweep": {"steps": 0}}, access={}
    )
    local = LocalNode([open_ended], {"memory": node.store}, identity=IDENTITY, tickets=node.store)
    submitted = await local.call("post", "submit", {"operation": "sweep"})
    assert submitted.data["steps"] == 0
    assert local.workers is not None
    await local.workers.run_one()
    done = await local.call("post", "ticket", {"ticket": submitted.data["ticket"]})
    assert done.data["state"] == "succeeded"
    assert done.data["steps_done"] == 3
    assert done.data["progress"] == 1
    assert done.data["result"] == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_stopping_the_workers_gives_a_running_ticket_back_at_once() -> None:
    node = Node(poll_seconds=0.01)
    started, release = asyncio.Event(), asyncio.Event()

    async def step(params: Any, number: int, steps: int) -> list[dict[str, Any]]:
        started.set()
        await release.wait()  # never set: the step is cut short by the stop
        return [{"n": number}]

    node.store.long_operations["post", "stats"] = step
    ticket = (await node.call("post", "submit", {"operation": "stats"})).data["ticket"]
    assert node.workers is not None
    node.workers.start()
    await asyncio.wait_for(started.wait(), 5)
    await node.workers.stop()
    held = node.store.tickets[ticket]
    assert held.state.value == "running"
    assert held.steps_done == 0  # the cut step was not saved
    assert held.lease_until is not None
    assert held.lease_until <= time.time()  # any node may take it now
    taken = await node.store.claim_ticket("other", 30.0, time.time())
    assert taken is not None
    assert taken.ticket_id == ticket
