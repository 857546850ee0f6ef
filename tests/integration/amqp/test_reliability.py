"""The ack policy under faults: transient retries, dead letters, poison, budgets, drain."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from beds.client import BedsClient
from beds.envelopes import Response
from beds.errors import ReplyTimeout, StoreUnavailable
from beds.testing import MemoryAdapter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import aiormq

    from beds.namaste import CallContext, Record
    from beds.node import BedsNode
    from beds.templates import Template
    from tests.helpers import Figures
    from tests.integration.amqp.helpers import StartNode

    TakeDeadLetter = Callable[[BedsNode], Awaitable[aiormq.abc.DeliveredMessage]]
    ClientFor = Callable[..., BedsClient]

FAST_RETRIES = """
[reliability]
retry_attempts = 3
retry_initial_delay = 0.01
retry_max_delay = 0.05
max_deliveries = 3
handler_budget = 0.2
"""


def memory(node: BedsNode) -> MemoryAdapter:
    adapter = node.adapters["memory"]
    assert isinstance(adapter, MemoryAdapter)
    return adapter


def failing_create(adapter: MemoryAdapter, failures: list[BaseException]) -> None:
    """Make the next creates raise the given exceptions, one each, then work again."""
    original = adapter.create

    async def create(template: Template, record: Record, ctx: CallContext) -> Record:
        if failures:
            raise failures.pop(0)
        return await original(template, record, ctx)

    adapter.create = create  # type: ignore[method-assign]


async def test_a_transient_failure_is_retried_and_succeeds(
    start_node: StartNode, client_for: ClientFor
) -> None:
    async with start_node(FAST_RETRIES) as node, client_for(node) as client:
        failing_create(memory(node), [StoreUnavailable("down"), StoreUnavailable("down")])
        created = await client.create("note", {"text": "persist"})
        assert created["id"] >= 1
        dispatcher = node.pools["wBroker"].dispatcher
        assert dispatcher.retried == 2


async def test_a_persistent_transient_failure_is_answered_and_dead_lettered(
    start_node: StartNode, client_for: ClientFor, dead_letter: TakeDeadLetter
) -> None:
    async with start_node(FAST_RETRIES) as node, client_for(node) as client:
        failing_create(memory(node), [StoreUnavailable("down") for _ in range(3)])
        with pytest.raises(StoreUnavailable):
            await client.create("note", {"text": "lost?"})
        message = await dead_letter(node)
        headers = message.header.properties.headers or {}
        assert headers["x-beds-error-code"] == "BEDS-503"
        assert b'"lost?"' in message.body
        assert node.pools["wBroker"].dead_lettered == 1


async def test_a_poison_message_is_dead_lettered_and_the_broker_keeps_serving(
    start_node: StartNode, client_for: ClientFor, dead_letter: TakeDeadLetter, figures: Figures
) -> None:
    """Scenario 4: a request that kills every task holding it, among requests that are fine."""
    good = 200
    async with start_node(FAST_RETRIES) as node, client_for(node) as client:
        adapter = memory(node)
        original = adapter.create

        async def create(template: Template, record: Record, ctx: CallContext) -> Record:
            if record.get("text") == "poison":
                raise asyncio.CancelledError  # the task holding it dies: no outcome, ever
            return await original(template, record, ctx)

        adapter.create = create  # type: ignore[method-assign]
        poison, *answers = await asyncio.gather(
            client.call("note", "create", {"text": "poison"}, timeout=3),
            *(client.create("note", {"text": f"good {i}"}) for i in range(good)),
            return_exceptions=True,
        )
        message = await dead_letter(node)
        pool = node.pools["wBroker"]
        ok = [a for a in answers if isinstance(a, dict) and a.get("id", 0) >= 1]
        figures(
            {
                "sent": good + 1,
                "answered_ok": len(ok),
                "poison_answer": getattr(getattr(poison, "error", None), "code", repr(poison)),
                "dead_lettered": pool.dead_lettered,
                "tasks_replaced": pool.replaced,
                "pool_size": pool.size,
                "lost": good - len(ok),
            }
        )
        headers = message.header.properties.headers or {}
        # Its caller is told at once (not left to time out), with the same reason.
        assert isinstance(poison, Response), poison
        assert poison.error is not None
        assert poison.error.code == "BEDS-500"
        assert poison.error.message == headers["x-beds-reason"]
        assert b'"poison"' in message.body
        assert "poison message: delivered 4 times" in str(headers["x-beds-reason"])
        assert headers["x-beds-error-code"] == "BEDS-500"
        assert headers["x-beds-routing-key"] == "note.write"
        assert message.header.properties.correlation_id, "the request's properties were dropped"
        assert len(ok) == good, "a request beside the poison was not answered"
        assert pool.dead_lettered == 1
        assert pool.replaced == 3
        assert pool.size == 2
        assert (await client.create("note", {"text": "fine"}))["id"] >= 1


async def test_quorum_queues_serve_and_dead_letter_poison_at_the_delivery_limit(
    start_node: StartNode, client_for: ClientFor, dead_letter: TakeDeadLetter
) -> None:
    async with (
        start_node(FAST_RETRIES, queue_type="quorum") as node,
        client_for(node) as client,
    ):
        assert (await client.create("note", {"text": "quorum"}))["id"] >= 1
        failing_create(memory(node), [asyncio.CancelledError() for _ in range(10)])
        with pytest.raises(ReplyTimeout):
            await client.create("note", {"text": "poison"}, timeout=3)
        message = await dead_letter(node)
        deaths: Any = (message.header.properties.headers or {})["x-death"]
        assert deaths[0]["reason"] in (b"delivery_limit", "delivery_limit")


async def test_a_slow_handler_is_reported_past_its_budget_and_still_answered(
    start_node: StartNode,
    client_for: ClientFor,
) -> None:
    async with start_node(FAST_RETRIES) as node, client_for(node) as client:
        adapter = memory(node)
        original = adapter.create

        async def slow(template: Template, record: Record, ctx: CallContext) -> Record:
            await asyncio.sleep(0.5)
            return await original(template, record, ctx)

        adapter.create = slow  # type: ignore[method-assign]
        assert (await client.create("note", {"text": "slow"}))["id"] >= 1
        assert node.pools["wBroker"].over_budget == 1


async def test_stop_drains_requests_in_flight(start_node: StartNode, client_for: ClientFor) -> None:
    async with start_node(instances=8) as node, client_for(node) as client:
        adapter = memory(node)
        original = adapter.create

        async def slow(template: Template, record: Record, ctx: CallContext) -> Record:
            await asyncio.sleep(0.3)
            return await original(template, record, ctx)

        adapter.create = slow  # type: ignore[method-assign]
        calls = [asyncio.create_task(client.create("note", {"text": f"d{i}"})) for i in range(8)]
        while node.pools["wBroker"].in_flight < 8:
            await asyncio.sleep(0.01)
        await node.stop()  # drains: every request in flight is finished and acknowledged
        results = await asyncio.gather(*calls)
        assert len({r["id"] for r in results}) == 8


async def test_a_request_unfinished_at_the_drain_deadline_goes_back_to_the_queue(
    start_node: StartNode,
    client_for: ClientFor,
) -> None:
    async with start_node() as first:
        env = first.config.node.env
        adapter = memory(first)
        original = adapter.create

        async def stuck(template: Template, record: Record, ctx: CallContext) -> Record:
            await asyncio.sleep(60)
            return await original(template, record, ctx)

        adapter.create = stuck  # type: ignore[method-assign]
        async with client_for(first, timeout=20) as client:
            call = asyncio.create_task(client.create("note", {"text": "survives"}))
            while first.pools["wBroker"].in_flight < 1:
                await asyncio.sleep(0.01)
            await first.stop()  # drain_seconds = 2: the request is not finished in time
            async with start_node(env=env) as second:
                assert second.config.node.env == env
                created = await call  # redelivered to the second node of the role
        assert created["id"] >= 1
