"""Hostile wire, named cases: the defect classes of issue 11 and what the corpus found since.

Values that end up in AMQP properties or headers, replies that cannot be delivered (refused,
queue gone, caller vanished), routing class and template checked against the body, properties
that are not UTF-8 or do not decode, and a forged ``x-death`` header. Each case drives one
shared ``beds run`` (2 tasks per broker: prefetch 4) with raw aiormq, then checks what every
case must leave behind: every delivery settled, a ping answered within a second, no traceback
in what the node logged meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiormq
import attrs
import orjson
import pytest
from pamqp.commands import Basic

from tests.helpers import operator_token
from tests.integration.hostile.corpus import FarTime
from tests.integration.hostile.wire import (
    CODE,
    DIRECT_REPLY_TO,
    Caller,
    DeadLetter,
    LogWindow,
    RawStr,
    dead_letters,
    envelope,
    marked_rows,
    raw_ping,
    settled_queues,
)
from tests.integration.nodes import Served, Stores

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]


@attrs.define
class Scene:
    """A test's view of the shared node: a caller, a marker for its rows, its log window."""

    served: Served
    amqp_url: str
    stores: Stores
    caller: Caller
    window: LogWindow
    prefix: str = attrs.field(factory=lambda: f"hn{uuid.uuid4().hex[:10]}-")
    author: str = attrs.field(factory=lambda: f"hostile_{uuid.uuid4().hex[:10]}")
    _settled: int = 0

    @property
    def exchange(self) -> str:
        return f"beds.events.{self.served.env}"

    def queue(self, broker: str) -> str:
        return f"beds.{self.served.env}.appServer.{broker}"

    def create(self, text: str, **meta: Any) -> dict[str, Any]:
        """A valid create of a post whose body is ``prefix + text`` (its marker)."""
        return envelope(
            "create", "spew_post", {"author": self.author, "body": self.prefix + text}, **meta
        )

    async def rows(self) -> dict[str, list[int]]:
        """Marker text → ids of the posts stored with it."""
        found: dict[str, list[int]] = {}
        for row_id, _, body in await marked_rows(self.stores, self.prefix):
            found.setdefault(body[len(self.prefix) :], []).append(row_id)
        return found

    async def settle(self) -> None:
        """Wait until every request so far is settled (its replies and dead letters are out:
        a broker acknowledges a request only after them)."""
        if self._settled == self.caller.published:
            return
        assert self.caller.channel is not None
        unsettled = await settled_queues(
            self.amqp_url,
            self.served.env,
            empty=tuple(self.queue(broker) for broker in ("rBroker", "wBroker", "mBroker")),
        )
        assert not unsettled, f"not settled: {unsettled}"
        self._settled = self.caller.published

    async def letters(self) -> list[DeadLetter]:
        """The dead letters of this test (its marker in the body), once all is settled."""
        await self.settle()
        assert self.caller.channel is not None
        taken = await dead_letters(self.caller.channel, self.served.env, quiet=0.1)
        return [letter for letter in taken if self.prefix.encode() in letter.body]

    async def check_node(self) -> None:
        """All settled, a ping within a second, no traceback logged meanwhile."""
        await self.settle()
        took = await raw_ping(self.amqp_url, self.exchange, timeout=1.0)
        assert took < 1.0
        assert self.served.process.poll() is None, "the node exited"
        assert not self.window.tracebacks(), self.window.text()[-4000:]


@pytest.fixture
async def scene(hostile_node: Served, amqp_url: str, stores: Stores) -> AsyncIterator[Scene]:
    window = LogWindow(hostile_node)
    async with Caller(
        amqp_url, f"beds.events.{hostile_node.env}", token=operator_token(hostile_node.env)
    ) as caller:
        # Letters left by an earlier test are not this one's.
        assert caller.channel is not None
        await dead_letters(caller.channel, hostile_node.env, quiet=0.2)
        yield Scene(hostile_node, amqp_url, stores, caller, window)


async def refusing_queue(channel: aiormq.abc.AbstractChannel, name: str) -> str:
    """Declare a queue that refuses every message (``x-max-length`` 0, ``reject-publish``)."""
    await channel.queue_declare(
        name, auto_delete=False, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    return name


def code_of(answer: dict[str, Any]) -> str:
    assert answer["ok"] is False, answer
    code: str = answer["error"]["code"]
    assert CODE.match(code), answer
    return code


# -- 1. values that end up in AMQP properties or headers ---------------------------------------


async def test_a_create_with_a_300_byte_event_id_is_refused_and_stores_nothing(
    scene: Scene,
) -> None:
    answer = await scene.caller.call(
        scene.create("long-event-id", event_id="e" * 300), "spew_post.write"
    )
    assert code_of(answer) == "BEDS-400"
    assert any("event_id" in detail for detail in answer["error"]["details"]), answer
    assert await scene.rows() == {}
    await scene.check_node()


OVER_LIMITS: dict[str, dict[str, Any]] = {
    "origin-64KiB": {"origin": "o" * 64 * 1024},
    "parent_id-256B": {"parent_id": "😀" * 64},  # 256 bytes in 64 characters
    "causation_id-NUL": {"causation_id": "a\x00b"},
    "correlation_id-newline": {"correlation_id": "line\nbreak"},
    "principal-U+2028": {"principal": "\u2028"},
    "event_id-escape": {"event_id": "\x1b[2J"},
    "idempotency_key-201-chars": {"idempotency_key": "k" * 201},
    "idempotency_key-spaces": {"idempotency_key": " padded "},
    "idempotency_key-empty": {"idempotency_key": ""},
    "depth-65": {"depth": 65},
    "depth-true": {"depth": True},
    "deadline-1e12": {"deadline": 1e12},
    "deadline-string": {"deadline": "1795435756"},
    "unknown-field": {"colour": "red"},
}


async def test_meta_values_over_their_limits_are_refused_before_anything_runs(
    scene: Scene,
) -> None:
    waiters = {name: scene.caller.expect(f"{scene.prefix}{name}") for name in OVER_LIMITS}
    for name, meta in OVER_LIMITS.items():
        await scene.caller.publish(
            scene.create(name, **meta), "spew_post.write", correlation_id=f"{scene.prefix}{name}"
        )
    answers = {
        name: orjson.loads((await asyncio.wait_for(waiter, 10)).body)
        for name, waiter in waiters.items()
    }
    wrong = {
        name: answer["error"]["code"] if answer["error"] else answer["status"]
        for name, answer in answers.items()
        if answer["ok"] or answer["error"]["code"] != "BEDS-400"
    }
    assert not wrong, f"not refused with BEDS-400: {wrong}"
    assert await scene.rows() == {}
    await scene.check_node()


async def test_more_oversized_requests_than_the_prefetch_then_a_ping_still_answers(
    scene: Scene,
) -> None:
    waiters = []
    for n in range(50):
        meta: dict[str, Any] = (
            {"event_id": "e" * 300},
            {"origin": "😀" * 16 * 1024},  # 64 KiB
            {"idempotency_key": "k" * 300},
        )[n % 3]
        correlation = f"over-{n}"
        waiters.append(scene.caller.expect(correlation))
        await scene.caller.publish(
            scene.create(f"over-{n}", **meta),
            "spew_post.write",
            correlation_id=correlation,
            headers={"x-big": "h" * 64 * 1024} if n % 2 else None,
        )
    replies = await asyncio.wait_for(asyncio.gather(*waiters), 30)
    codes = {code_of(orjson.loads(reply.body)) for reply in replies}
    assert codes == {"BEDS-400"}
    assert await scene.rows() == {}
    await scene.check_node()


# -- 2. replies that cannot be delivered -------------------------------------------------------


async def test_a_create_whose_reply_queue_refuses_it_keeps_its_outcome_in_the_dlq(
    scene: Scene,
) -> None:
    assert scene.caller.channel is not None
    refusing = await refusing_queue(scene.caller.channel, scene.prefix + "refuses")
    try:
        await scene.caller.publish(
            scene.create("refused-reply"), "spew_post.write", reply_to=refusing
        )
        letters = await scene.letters()
    finally:
        await scene.caller.channel.queue_delete(refusing)
    rows = await scene.rows()
    assert list(rows) == ["refused-reply"]
    assert [letter.code for letter in letters] == ["BEDS-500R"]
    kept = letters[0]
    assert kept.headers.get("x-beds-executed") is True
    reply = kept.reply()
    assert reply is not None
    assert reply["status"] == 201
    assert [reply["data"]["id"]] == rows["refused-reply"]
    await scene.check_node()


async def test_a_fetch_whose_reply_queue_refuses_it_is_settled_without_a_dead_letter(
    scene: Scene,
) -> None:
    assert scene.caller.channel is not None
    refusing = await refusing_queue(scene.caller.channel, scene.prefix + "refuses")
    try:
        for n in range(10):  # more than the prefetch
            await scene.caller.publish(
                envelope(
                    "fetch",
                    "spew_post",
                    {"query": "by_author", "params": {"author": scene.author}},
                    origin=scene.prefix,
                ),
                "spew_post.read",
                reply_to=refusing,
                correlation_id=f"{scene.prefix}{n}",
            )
        await scene.check_node()
    finally:
        await scene.caller.channel.queue_delete(refusing)
    assert await scene.letters() == []


async def test_a_create_whose_caller_vanished_keeps_its_outcome_in_the_dlq(
    scene: Scene,
) -> None:
    # The caller's exclusive reply queue goes with its connection, before the node answers.
    gone = await aiormq.connect(scene.amqp_url)
    channel = await gone.channel()
    declared = await channel.queue_declare("", exclusive=True)
    assert declared.queue is not None
    await gone.close()
    await scene.caller.publish(scene.create("vanished"), "spew_post.write", reply_to=declared.queue)
    await scene.caller.publish(
        scene.create("never-declared"), "spew_post.write", reply_to=scene.prefix + "nobody"
    )
    letters = await scene.letters()
    rows = await scene.rows()
    assert sorted(rows) == ["never-declared", "vanished"]
    kept = {
        letter.body.decode(): letter.reply() for letter in letters if letter.code == "BEDS-500R"
    }
    ids = sorted(reply["data"]["id"] for reply in kept.values() if reply is not None)
    assert ids == sorted(row for found in rows.values() for row in found)
    await scene.check_node()


async def test_writes_sharing_an_event_id_whose_reply_queue_is_gone_each_keep_their_outcome(
    scene: Scene,
) -> None:
    """The reply's ``message_id`` is the request's event id, which the caller chose: twenty
    writes with the same one, in flight together, must each be noticed as undeliverable."""
    event_id = f"cli.hostile.{uuid.uuid4().hex}"
    await asyncio.gather(
        *(
            scene.caller.publish(
                scene.create(f"same-event-{n}", event_id=event_id),
                "spew_post.write",
                reply_to=scene.prefix + "nobody",
            )
            for n in range(20)
        )
    )
    letters = await scene.letters()
    rows = await scene.rows()
    kept = sorted(
        reply["data"]["id"]
        for letter in letters
        if letter.code == "BEDS-500R" and (reply := letter.reply()) is not None
    )
    stored = sorted(row for found in rows.values() for row in found)
    assert len(stored) == 20
    assert kept == stored, f"{len(stored) - len(kept)} writes ran and nobody learned of them"
    await scene.check_node()


async def test_a_keyed_create_for_a_direct_reply_to_caller_that_vanished_gets_its_outcome_again(
    scene: Scene,
) -> None:
    """RabbitMQ drops a reply to a direct reply-to address whose channel closed and cannot be
    asked whether it did (docs/architecture.md): the outcome is kept by the idempotency key."""
    gone = await aiormq.connect(scene.amqp_url)
    try:
        channel = await gone.channel(publisher_confirms=True)
        await channel.basic_consume(DIRECT_REPLY_TO, _ignore, no_ack=True)
        probe = await channel.queue_declare("", exclusive=True)
        assert probe.queue is not None
        await channel.basic_publish(
            b"probe", routing_key=probe.queue, properties=Basic.Properties(reply_to=DIRECT_REPLY_TO)
        )
        message = await _get_one(channel, probe.queue)
        address = message.header.properties.reply_to
        assert address is not None
        assert address.startswith(DIRECT_REPLY_TO + ".")
    finally:
        await gone.close()
    key = f"key-{uuid.uuid4().hex}"
    request = scene.create("stale-direct", idempotency_key=key)
    await scene.caller.publish(request, "spew_post.write", reply_to=address)
    await scene.check_node()
    again = await scene.caller.call(request, "spew_post.write")
    rows = await scene.rows()
    assert again["status"] == 201, again
    assert rows == {"stale-direct": [again["data"]["id"]]}


async def test_headers_near_the_frame_limit_on_a_write_whose_reply_is_refused(
    scene: Scene,
) -> None:
    """The dead letter keeping the outcome adds the reply to the request's own headers: they
    no longer fit one frame, and RabbitMQ would close the node's connection for it."""
    assert scene.caller.channel is not None
    refusing = await refusing_queue(scene.caller.channel, scene.prefix + "refuses")
    try:
        await scene.caller.publish(
            scene.create("big-headers"),
            "spew_post.write",
            reply_to=refusing,
            headers={f"x-pad-{n}": "p" * 60_000 for n in range(2)},
        )
        letters = await scene.letters()
    finally:
        await scene.caller.channel.queue_delete(refusing)
    rows = await scene.rows()
    assert list(rows) == ["big-headers"]
    assert [letter.code for letter in letters] == ["BEDS-500R"]
    reply = letters[0].reply()
    assert reply is not None
    assert [reply["data"]["id"]] == rows["big-headers"]
    await scene.check_node()


# -- 3. routing class and template checked against the body ------------------------------------


async def test_a_create_published_with_a_read_key_is_refused_and_stores_nothing(
    scene: Scene,
) -> None:
    answer = await scene.caller.call(scene.create("wrong-class"), "spew_post.read")
    assert code_of(answer) in {"BEDS-405", "BEDS-400"}
    assert await scene.rows() == {}
    await scene.check_node()


async def test_a_profile_body_published_with_the_post_read_key_is_refused(scene: Scene) -> None:
    body = envelope("fetch", "spew_profile", {"query": "by_handle", "params": {"handle": "ann"}})
    answer = await scene.caller.call(body, "spew_post.read")
    assert code_of(answer) == "BEDS-400"
    await scene.check_node()


@pytest.mark.parametrize("forged", ["spew_post.write", "spew_post.read", None])
async def test_a_write_sent_straight_to_the_read_queue_is_refused(
    scene: Scene, forged: str | None
) -> None:
    answer = await scene.caller.call(
        scene.create(f"straight-{forged}"),
        scene.queue("rBroker"),
        exchange="",
        headers={"x-beds-routing-key": forged} if forged else None,
    )
    assert code_of(answer) in {"BEDS-405", "BEDS-400"}
    assert await scene.rows() == {}
    await scene.check_node()


async def test_a_request_with_a_forged_x_death_header_that_expires_in_the_queue(
    amqp_url: str, serve: Callable[..., Awaitable[Served]]
) -> None:
    """RabbitMQ dead-letters a request that expires in a broker queue (the queue's
    ``x-dead-letter-exchange``) and updates its ``x-death`` header: one that a sender forged
    as an array of non-tables crashes the queue process of RabbitMQ 3.10.8 (sometimes: it
    depends on how the request reaches the head of the queue), before any node sees it.

    What BEDS guarantees either way: the queue survived and everything settled, or the node
    noticed that RabbitMQ cancelled its consumer (it reports not consuming and retries) instead
    of waiting on a dead queue without a word. Its own node: the read queue may not survive."""
    served = await serve()
    exchange = f"beds.events.{served.env}"
    window = LogWindow(served)
    fetch = envelope("fetch", "spew_post", {"query": "by_author", "params": {"author": "nobody"}})
    async with Caller(amqp_url, exchange, token=operator_token(served.env)) as caller:
        # Enough requests ahead of it that it expires while it waits in the queue.
        for _ in range(200):
            await caller.publish(fetch, "spew_post.read")
        with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
            await caller.publish(
                fetch,
                "spew_post.read",
                expiration="1",
                delivery_mode=2,
                headers={"x-death": [decimal.Decimal("1.5")]},
            )
    read_queue = f"beds.{served.env}.appServer.rBroker"
    unsettled = await settled_queues(amqp_url, served.env, empty=(read_queue,))
    if read_queue in unsettled and unsettled[read_queue].startswith("gone"):
        # RabbitMQ crashed the queue: the node must have noticed its consumer was cancelled.
        # (RabbitMQ then also closes the node's connection with INTERNAL_ERROR, which aiormq
        # logs with its reader's traceback; the node reconnects.)
        deadline = time.monotonic() + 10
        while "cancelled broker rBroker's consumer" not in window.text():
            assert time.monotonic() < deadline, window.text()[-4000:]
            await asyncio.sleep(0.1)
        return
    assert not unsettled, f"not settled: {unsettled}"
    took = await raw_ping(amqp_url, exchange, timeout=1.0)
    assert took < 1.0
    assert not window.tracebacks(), window.text()[-4000:]


# -- properties that are not UTF-8, or do not decode at all -------------------------------------


MATCHED, STRAY, NONE = "matched", "stray", "none"
"""How the caller gets its BEDS-400: by its correlation id, without one, or not at all (the
properties did not decode, or ``reply_to`` is unusable)."""


UNDECODABLE: dict[str, tuple[dict[str, Any], str, bool]] = {
    # name: (hostile part, how the caller gets its BEDS-400, whether a dead letter is kept)
    "correlation_id": ({"correlation_id": RawStr(b"\xff\xfe-corr")}, STRAY, True),
    "message_id": ({"message_id": RawStr(b"id-\xc3")}, MATCHED, True),
    "content_type": ({"content_type": RawStr(b"application/json\xff")}, MATCHED, True),
    "routing-key-header": (
        {"headers": {"x-beds-routing-key": RawStr(b"spew_post.\xffwrite")}},
        MATCHED,
        True,
    ),
    "deliveries-header": ({"headers": {"x-beds-deliveries": -1}}, MATCHED, True),
    "header-name": ({"headers": {RawStr(b"x-\xff"): 1}}, NONE, True),
    "timestamp": ({"timestamp": FarTime(2000, 1, 1)}, NONE, True),
    "reply_to": ({"reply_to": RawStr(b"q\xff")}, NONE, True),
    "routing_key": ({"routing_key": RawStr(b"spew_post\xff.write")}, MATCHED, False),
}


async def test_properties_that_are_not_utf8_or_do_not_decode_are_refused(scene: Scene) -> None:
    waiters = {}
    for name, (hostile, _, _) in UNDECODABLE.items():
        properties = dict(hostile)
        routing_key = properties.pop("routing_key", "spew_post.write")
        correlation = properties.pop("correlation_id", None) or f"{scene.prefix}{name}"
        waiters[name] = scene.caller.expect(correlation)
        await scene.caller.publish(
            scene.create(name), routing_key, correlation_id=correlation, **properties
        )
    letters = await scene.letters()
    kept = {
        name: letter.code
        for letter in letters
        for name in UNDECODABLE
        if f'"{scene.prefix}{name}"'.encode() in letter.body
    }
    strays = [orjson.loads(stray.body) for stray in scene.caller.stray]
    wrong = []
    for name, (_, reply, dead_lettered) in UNDECODABLE.items():
        waiter = waiters[name]
        if reply == MATCHED and not waiter.done():
            wrong.append(f"{name}: no reply")
        if reply != MATCHED and waiter.done():
            wrong.append(f"{name}: a reply was not expected")
        if waiter.done():
            answer = orjson.loads(waiter.result().body)
            if answer["ok"] or answer["error"]["code"] != "BEDS-400":
                wrong.append(f"{name}: answered {answer['status']}")
        if kept.get(name) != ("BEDS-400" if dead_lettered else None):
            wrong.append(f"{name}: dead letter {kept.get(name)}")
    expected_strays = sum(reply == STRAY for _, reply, _ in UNDECODABLE.values())
    codes = [answer["error"]["code"] for answer in strays if not answer["ok"]]
    if codes != ["BEDS-400"] * expected_strays:
        wrong.append(f"replies without a correlation id: {codes}")
    assert not wrong, wrong
    assert await scene.rows() == {}
    await scene.check_node()


# -- helpers ------------------------------------------------------------------------------------


async def _ignore(message: aiormq.abc.DeliveredMessage) -> None:
    return None


async def _get_one(channel: aiormq.abc.AbstractChannel, queue: str) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = await channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing arrived in {queue}")
