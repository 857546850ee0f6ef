"""Trusted origins: a request's and an event's origin is the AMQP user RabbitMQ vouches for.

RabbitMQ refuses a publish whose ``user_id`` is not the connection's user, so the node takes
the origin from it, never from ``meta.origin``; templates and lineage batches can be limited
to named users (BEDS-403O), and a forged lineage batch is dead-lettered, never stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiormq
import orjson
from pamqp.commands import Basic

from beds import hookimpl
from beds.codec import encode_request
from beds.envelopes import Operation, Request, RequestMeta
from beds.lineage import Event, encode_events
from beds.registry import TemplateRegistry
from beds.routing import routing_key
from beds.testing import MemoryAdapter
from tests.integration.amqp.helpers import client_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from beds.envelopes import Response
    from beds.registry import AdapterRegistry
    from tests.integration.amqp.helpers import StartNode

GUARDED = """
name = "guarded"
store = "memory"
tla = "grd"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.text]
type = "str"
[operations.create]
params = ["text"]
returns = ["id"]
[queries.by_id]
params = ["id"]
[access]
origins = ["beds-app"]
"""


class Origins:
    """Registers ``guarded`` and records the origin of every request the node answered."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl
    def beds_register_templates(self, registry: TemplateRegistry) -> None:
        registry.add_text(GUARDED, source="guarded.toml")

    @hookimpl
    async def beds_after_dispatch(self, request: Request, response: Response) -> None:
        self.seen.append(request.meta.origin)


async def test_the_origin_is_the_vouched_amqp_user_not_what_the_sender_wrote(
    start_node: StartNode,
) -> None:
    origins = Origins()
    async with start_node(plugins=(origins,)) as node, client_of(node) as client:
        client.origin = "beds-app"  # what it writes in meta.origin: not believed
        created = await client.call("note", "create", {"text": "hi"})
        assert created.ok, created.error
        refused = await client.call("guarded", "create", {"text": "hi"})
    assert origins.seen == ["guest", "guest"]
    assert not refused.ok
    assert refused.error is not None
    assert refused.error.code == "BEDS-403O"
    assert "origin: guest" in refused.error.details


async def test_a_request_no_user_vouches_for_has_no_origin(start_node: StartNode) -> None:
    origins = Origins()
    async with start_node(plugins=(origins,)) as node:
        connection = await aiormq.connect(node.config.amqp.url)
        try:
            channel = await connection.channel()
            declared = await channel.queue_declare("", exclusive=True)
            replies: asyncio.Queue[bytes] = asyncio.Queue()
            assert declared.queue is not None

            async def on_reply(message: aiormq.abc.DeliveredMessage) -> None:
                await replies.put(message.body)

            await channel.basic_consume(declared.queue, on_reply, no_ack=True)
            for template in ("note", "guarded"):
                request = Request(
                    operation=Operation.CREATE,
                    template=template,
                    payload={"text": "raw"},
                    meta=RequestMeta(origin="beds-app"),
                )
                await channel.basic_publish(
                    encode_request(request),
                    exchange=node.config.amqp.events_exchange,
                    routing_key=routing_key(template, Operation.CREATE),
                    properties=Basic.Properties(
                        content_type="application/json",
                        reply_to=declared.queue,
                        correlation_id=template,
                    ),
                )
            answers = [orjson.loads(await asyncio.wait_for(replies.get(), 5)) for _ in range(2)]
        finally:
            await connection.close()
    assert origins.seen == ["", ""]
    codes = sorted(str((answer.get("error") or {}).get("code")) for answer in answers)
    assert codes == ["BEDS-403O", "None"]


class EventKeeper(MemoryAdapter):
    """The memory store, able to keep lineage events (an admin node's event store)."""

    def __init__(self) -> None:
        super().__init__("memory")
        self.events: list[dict[str, Any]] = []

    async def store_events(self, events: Sequence[dict[str, Any]]) -> None:
        self.events.extend(events)

    async def find_events(
        self, *, event_ids: Sequence[str] = (), parent_ids: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event_id"] in event_ids]


class KeeperPlugin:
    def __init__(self) -> None:
        self.adapter = EventKeeper()

    @hookimpl
    def beds_register_adapters(self, registry: AdapterRegistry) -> None:
        registry.add(store="keeper", factory=lambda settings: self.adapter)


LOGS_NODE = """
[lineage]
store = "keeper"
trusted_users = ["beds-app"]
[stores.keeper]
[roles.appServer.brokers.logs]
type = "logs"
instances = 1
bindings = ["log.#"]
"""


async def test_a_lineage_batch_from_an_untrusted_user_is_dead_lettered_not_stored(
    start_node: StartNode,
) -> None:
    from beds.dlq import DeadLetterQueue

    keeper = KeeperPlugin()
    async with start_node(LOGS_NODE, plugins=(keeper,)) as node:
        forged = Event(
            event_id="forged-1", kind="request", node="x", env=node.config.node.env, at=time.time()
        )
        connection = await aiormq.connect(node.config.amqp.url)
        try:
            channel = await connection.channel()
            await channel.basic_publish(
                encode_events([forged]),
                exchange=node.config.amqp.logs_exchange,
                routing_key="log.audit",
                properties=Basic.Properties(content_type="application/json", user_id="guest"),
            )
        finally:
            await connection.close()
        letters = []
        async with DeadLetterQueue(node.config) as dead:
            for _ in range(100):
                letters = await dead.peek()
                if letters:
                    break
                await asyncio.sleep(0.05)
        pool = node.pools["logs"]
        assert pool.dead_lettered >= 1
    assert keeper.adapter.events == [] or all(
        e["event_id"] != "forged-1" for e in keeper.adapter.events
    )
    [letter] = [x for x in letters if x.routing_key == "log.audit"]
    assert letter.reason == "BEDS-403O"
    assert "origin: guest" in letter.detail
