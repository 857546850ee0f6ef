"""The admin role's syslog broker on a real RabbitMQ, sending to receivers run by the test.

An appServer node serves the in-memory ``note`` template (``amqp/helpers.py``, imported here);
an admin node of the same environment stores every event (its logs broker, in memory) and
forwards those at the level to a UDP or TCP receiver on a free loopback port (this machine has
no syslog daemon). What the logs broker stored is the oracle: every stored event at the level
reaches the receiver once, as a well-formed RFC 5424 message, and no event below it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING, Any

import aiormq
from pamqp.commands import Basic

from beds import hookimpl
from beds.broker.rfc5424 import SEVERITIES, severity_of
from beds.broker.syslog import SyslogPool
from beds.config import load_config
from beds.errors import NotFound, StoreError, StoreUnavailable
from beds.lineage import Event, decode_events
from beds.node import BedsNode
from beds.plugins import make_plugin_manager
from beds.testing import MemoryAdapter, unique_name
from tests.helpers import until
from tests.integration.amqp.helpers import (
    MemoryPlugin,
    beds_log_on_failure,
    client_of,
    start_node,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from beds.config.model import SyslogLevel
    from beds.namaste import CallContext, Record
    from beds.registry import AdapterRegistry
    from beds.templates import Template
    from tests.integration.amqp.helpers import StartNode

__all__ = ("beds_log_on_failure", "start_node")  # fixtures, shared with amqp/

APP = """
[lineage]
flush_interval = 0.02
[reliability]
retry_attempts = 2
retry_initial_delay = 0.01
retry_max_delay = 0.02
"""

_PARAM = re.compile(rb'([a-z_]+)="((?:[^"\\\]]|\\["\\\]])*)"')
_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?[^\\]\])(?: |$)")


class Received:
    """RFC 5424 messages a receiver got, by the event id in their structured data."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def add(self, line: bytes) -> None:
        assert b"\n" not in line, line
        self.lines.append(line)

    def parsed(self) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            header = _HEADER.match(line)
            assert header is not None, f"not RFC 5424: {line!r}"
            params = {
                name.decode(): re.sub(rb'\\(["\\\]])', rb"\1", value).decode()
                for name, value in _PARAM.findall(header[7])
            }
            found.append(
                {
                    "severity": int(header[1]) % 8,
                    "facility": int(header[1]) // 8,
                    "app": header[4].decode(),
                    "msgid": header[6].decode(),
                    "params": params,
                    "msg": line[header.end() :].decode(),
                }
            )
        return found

    def ids(self) -> list[str]:
        return [message["params"]["event_id"] for message in self.parsed()]


class UdpReceiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = Received()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.add(data)


@contextlib.asynccontextmanager
async def udp_receiver() -> AsyncIterator[tuple[int, Received]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        UdpReceiver, local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1], protocol.received
    finally:
        transport.close()


class TcpReceiver:
    """Octet-counted RFC 5424 over TCP (RFC 6587), on one loopback port, that can go down."""

    def __init__(self) -> None:
        self.received = Received()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse connections and close the open ones, as a receiver that died."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._clients):
            writer.close()
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                length = await reader.readuntil(b" ")
                self.received.add(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()


class EventKeeper(MemoryAdapter):
    """The memory store, able to keep lineage events: the admin node's event store."""

    def __init__(self) -> None:
        super().__init__("keeper")
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


@contextlib.asynccontextmanager
async def admin_node(
    folder: Path, amqp_url: str, env: str, syslog: str, keeper: KeeperPlugin
) -> AsyncIterator[BedsNode]:
    """An admin node of ``env`` whose role forwards the logs exchange to ``[syslog]``."""
    path = folder / f"{unique_name('admin')}.toml"
    path.write_text(
        f"""
schema_version = 1
[node]
name = "adm1"
env = "{env}"
role = "admin"
drain_seconds = 2
[amqp]
url = "{amqp_url}"
events_exchange = "beds.events.{env}"
logs_exchange = "beds.logs.{env}"
dead_letter_exchange = "beds.dlx.{env}"
control_exchange = "beds.control.{env}"
[lineage]
store = "keeper"
flush_interval = 0.02
[stores.keeper]
[reliability]
handler_budget = 0.5
[roles.admin.brokers.adminSyslogBroker]
type = "syslog"
bindings = ["log.#"]
[syslog]
{syslog}
""",
        encoding="utf-8",
    )
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(MemoryPlugin())
    pm.register(keeper)
    async with BedsNode(load_config(path, environ={}), plugin_manager=pm) as node:
        yield node


def memory(node: BedsNode) -> MemoryAdapter:
    adapter = node.adapters["memory"]
    assert isinstance(adapter, MemoryAdapter)
    return adapter


def failing_creates(adapter: MemoryAdapter, failures: list[BaseException]) -> None:
    """Make the next creates raise these, one each, then work again."""
    original = adapter.create

    async def create(template: Template, record: Record, ctx: CallContext) -> Record:
        if failures:
            raise failures.pop(0)
        return await original(template, record, ctx)

    adapter.create = create  # type: ignore[method-assign]


class Published:
    """Every event published on the logs exchange, read from a queue of the test's own."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def where(self, **fields: Any) -> list[Event]:
        return [e for e in self.events if all(getattr(e, k) == v for k, v in fields.items())]

    def at_level(self, level: SyslogLevel) -> set[str]:
        """The event ids a syslog broker at ``level`` forwards."""
        return {e.event_id for e in self.events if severity_of(e) <= SEVERITIES[level]}


@contextlib.asynccontextmanager
async def published(amqp_url: str, env: str) -> AsyncIterator[Published]:
    seen = Published()
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_declare(f"beds.logs.{env}", exchange_type="topic", durable=True)
        declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
        assert declared.queue is not None
        await channel.queue_bind(declared.queue, f"beds.logs.{env}", routing_key="log.#")

        async def on_batch(message: aiormq.abc.DeliveredMessage) -> None:
            seen.events.extend(decode_events(message.body))

        await channel.basic_consume(declared.queue, on_batch, no_ack=True)
        yield seen
    finally:
        await connection.close()


async def test_events_at_the_level_reach_a_udp_receiver_once_and_none_below(
    start_node: StartNode, tmp_path: Path, amqp_url: str
) -> None:
    env = unique_name("syslog")
    syslog = 'target = "udp://127.0.0.1:{}"\nlevel = "warning"\nfacility = "local3"'
    async with (
        udp_receiver() as (port, received),
        published(amqp_url, env) as events,
        admin_node(tmp_path, amqp_url, env, syslog.format(port), KeeperPlugin()) as admin,
        start_node(APP, env=env) as app,
        client_of(app) as client,
    ):
        assert ("syslog", "ok") in [(c.name, c.status) for c in admin.checks]
        ok = await client.call("note", "create", {"text": "fine"})
        missing = await client.call("note", "update", {"id": 999, "text": "x"})
        failing_creates(memory(app), [StoreError("refused")])
        refused = await client.call("note", "create", {"text": "refused"})
        failing_creates(memory(app), [StoreUnavailable("away"), StoreUnavailable("away")])
        away = await client.call("note", "create", {"text": "away"})
        assert ok.ok
        assert [r.error.code for r in (missing, refused, away) if r.error] == [
            NotFound.CODE,
            StoreError.CODE,
            StoreUnavailable.CODE,
        ]
        requests = [ok, missing, refused, away]
        await until(lambda: len(events.where(kind="request")) == 4, what="4 requests published")
        await until(lambda: len(events.where(kind="db")) == 4, what="4 database calls published")
        wanted = events.at_level("warning")
        await until(lambda: set(received.ids()) >= wanted, what="the events at the level sent")
        await asyncio.sleep(0.3)  # anything more (a late batch, a duplicate) would be here now
        wanted = events.at_level("warning")
        pool = admin.pools["adminSyslogBroker"]
        assert isinstance(pool, SyslogPool)
        assert pool.forwarded == len(wanted)
        assert pool.below_level == len(events.events) - len(wanted)

    assert sorted(received.ids()) == sorted(wanted), "one message per event at the level"
    by_id = {message["params"]["event_id"]: message for message in received.parsed()}
    severities = [by_id.get(r.meta.event_id, {}).get("severity") for r in requests]
    # ok: info, below the level; 404: warning; store error: err; still away after retries: crit
    assert severities == [None, 4, 3, 2]
    away_message = by_id[away.meta.event_id]
    assert (away_message["facility"], away_message["app"], away_message["msgid"]) == (
        19,
        "beds",
        "request",
    )
    assert away_message["params"] == {
        "event_id": away.meta.event_id,
        "node": "t1",
        "env": env,
        "template": "note",
        "operation": "create",
        "status": "503",
        "code": "BEDS-503",
    }
    assert away_message["msg"] == "create note answered 503 BEDS-503"


async def queue_depth(node: BedsNode, broker: str) -> int:
    connection = await aiormq.connect(node.config.amqp.url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(node.config.queue_name(broker), passive=True)
        return declared.message_count or 0
    finally:
        await connection.close()


async def test_nothing_is_lost_while_the_tcp_receiver_is_down(
    start_node: StartNode, tmp_path: Path, amqp_url: str
) -> None:
    env, keeper, receiver = unique_name("syslog"), KeeperPlugin(), TcpReceiver()
    await receiver.start()
    try:
        async with (
            admin_node(
                tmp_path,
                amqp_url,
                env,
                f'target = "tcp://127.0.0.1:{receiver.port}"\nlevel = "info"',
                keeper,
            ) as admin,
            start_node(APP, env=env) as app,
            client_of(app) as client,
        ):
            first = await client.call("note", "create", {"text": "before"})
            await until(lambda: first.meta.event_id in received_ids(receiver), what="first sent")

            await receiver.stop()
            during = []
            for n in range(8):  # one batch each: more than the broker's prefetch
                during.append(await client.call("note", "create", {"text": f"during {n}"}))
                await asyncio.sleep(0.05)
            pool = admin.pools["adminSyslogBroker"]
            assert isinstance(pool, SyslogPool)
            forwarded = pool.forwarded
            await asyncio.sleep(1.5)  # past the handler budget: batches went back to the queue
            assert pool.forwarded == forwarded, "nothing is sent while the receiver is down"
            assert not any(r.meta.event_id in received_ids(receiver) for r in during)
            assert await queue_depth(admin, "adminSyslogBroker") >= 1, "RabbitMQ holds them"
            assert app.ready
            assert admin.ready, "the broker neither blocks nor crashes the node"

            await receiver.start()  # the same port, as a receiver that restarted
            wanted = {r.meta.event_id for r in during}
            await until(lambda: wanted <= received_ids(receiver), 15, what="every event sent after")
            await until(lambda: pool.settle.unsettled_count == 0, what="every batch acknowledged")
            assert await queue_depth(admin, "adminSyslogBroker") == 0
    finally:
        await receiver.stop()
    requests = [m for m in receiver.received.parsed() if m["msgid"] == "request"]
    assert all(m["severity"] == 6 for m in requests)  # info: succeeded
    assert {m["params"]["event_id"] for m in requests} == {first.meta.event_id} | wanted


def received_ids(receiver: TcpReceiver) -> set[str]:
    return set(receiver.received.ids())


async def test_a_batch_that_does_not_decode_is_dead_lettered(tmp_path: Path, amqp_url: str) -> None:
    env, keeper = unique_name("syslog"), KeeperPlugin()
    async with (
        udp_receiver() as (port, received),
        admin_node(tmp_path, amqp_url, env, f'target = "udp://127.0.0.1:{port}"', keeper) as admin,
    ):
        connection = await aiormq.connect(amqp_url)
        try:
            channel = await connection.channel()
            await channel.basic_publish(
                b'[{"not": "an event"}]',
                exchange=admin.config.amqp.logs_exchange,
                routing_key="log.events",
                properties=Basic.Properties(content_type="application/json", user_id="guest"),
            )
        finally:
            await connection.close()
        pool = admin.pools["adminSyslogBroker"]
        await until(lambda: pool.dead_lettered == 1, what="the batch dead-lettered")
        assert received.lines == []
