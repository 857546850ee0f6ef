"""Hostile wire: thousands of generated messages no BEDS client would send, against ``beds run``.

Driven with raw aiormq, not BedsClient. Hypothesis generates the messages (a fixed seed; set
``BEDS_HOSTILE_MESSAGES`` for a longer run): every ``meta`` field and AMQP property varies in
type, size (0 B to 64 KiB) and content (emoji, NUL, control characters, lone surrogates in the
JSON text), routing keys and templates are mismatched on purpose, reply queues refuse replies
or do not exist, headers are forged. Then, for the whole run:

- every message with a reply queue it can read got exactly one reply with a catalogue code, or
  was returned unroutable by RabbitMQ (no broker is bound for its key);
- every message without ``reply_to`` is in the dead-letter queue;
- every row the run stored belongs to a create whose caller got ``201`` with its id, or whose
  outcome is kept as a ``BEDS-500R`` dead letter (its reply queue refused or vanished);
- nothing refused stored anything; no broker queue holds an unacknowledged message; a ping
  answers within a second; the node's log has no traceback.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import re
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiormq
import attrs
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pamqp.commands import Basic

from .conftest import StartServed, Stores, client_of, stored_posts, wait_ready

if TYPE_CHECKING:
    from tests.conftest import Figures

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]

MESSAGES = int(os.environ.get("BEDS_HOSTILE_MESSAGES", "5000"))
IN_FLIGHT = 200
CODE = re.compile(r"^BEDS-\d{3}[A-Z]?$")
LONE_SURROGATE = "\ufdd0lone\ufdd0"
"""Replaced by the JSON escape ``\\ud800`` in the body (Python cannot encode the real thing)."""

READY, REFUSES, GONE, NONE = "ready", "refuses", "gone", "none"
"""Where a message's reply goes: a queue the test reads, one that refuses every message, one
that does not exist, or no ``reply_to`` at all."""


@attrs.frozen
class Hostile:
    """One generated message, before the run's ids are filled in."""

    operation: Any
    template: Any
    route: str
    """``exact``, ``wrong-class``, ``wrong-template``, ``direct`` (default exchange, forged
    header) or a routing key of its own."""
    meta: dict[str, Any]
    payload_kind: str
    reply: str
    correlation_hostile: str | None
    content_type: str | None
    headers: dict[str, Any]
    garbage: bytes | None
    """A body that is not an envelope at all (then the rest is ignored)."""


# -- strategies -----------------------------------------------------------------------------

printable = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
hostile_text = st.one_of(
    printable,
    st.sampled_from(
        ["", " ", "\x00", "a\x00b", "line\nbreak", "\x1b[2J", "😀" * 70, "é" * 200, LONE_SURROGATE]
    ),
    st.integers(min_value=0, max_value=64 * 1024).map(lambda n: "x" * n),
)
json_any = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(printable, children, max_size=3)
    ),
    max_leaves=6,
)
META_FIELDS = (
    "event_id",
    "parent_id",
    "depth",
    "correlation_id",
    "causation_id",
    "origin",
    "idempotency_key",
    "deadline",
    "principal",
)
short_property = st.one_of(
    st.none(),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60).filter(
        lambda text: len(text.encode()) <= 255
    ),
    st.sampled_from(["\x00", "a\nb", "😀" * 63, "x" * 255]),
)
header_values = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.booleans(),
    printable,
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(min_value=0, max_value=9)),
)
forged_headers = st.dictionaries(
    st.sampled_from(["x-beds-routing-key", "x-beds-deliveries", "x-beds-error-code", "x-other"]),
    header_values | st.sampled_from(["spew_post.write", "spew_post.read", "beds.read"]),
    max_size=3,
)


@st.composite
def hostile_messages(draw: st.DrawFn) -> Hostile:
    """Mostly sound messages with one or two hostile parts: most must get past the first
    check, so the deeper paths (writes that run, replies that cannot be delivered) are
    exercised too. Which parts are hostile is decided by a seeded random draw (hypothesis
    alone would favour the hostile branches, which give it more to explore)."""
    rnd = random.Random(draw(st.integers(min_value=0, max_value=2**64)))

    def maybe(usual: Any, hostile: st.SearchStrategy[Any], chance: float) -> Any:
        return draw(hostile) if rnd.random() < chance else usual

    operations = ["create"] * 4 + ["fetch", "update", "delete", "ping", "submit"]
    return Hostile(
        operation=maybe(rnd.choice(operations), json_any, 0.1),
        template=maybe(rnd.choice(["spew_post"] * 4 + ["spew_profile", "beds"]), hostile_text, 0.1),
        route=maybe(
            "exact",
            st.sampled_from(["wrong-class", "wrong-template", "direct"])
            | st.sampled_from(["spew_post.write", "beds.read", "nobody.read", "#", "*.read"]),
            0.15,
        ),
        meta=maybe({}, st.dictionaries(st.sampled_from(META_FIELDS), json_any, max_size=4), 0.25),
        payload_kind=rnd.choice(["record", "record", "query", "junk"]),
        reply=maybe(READY, st.sampled_from([REFUSES, GONE, NONE]), 0.3),
        correlation_hostile=maybe(None, short_property.filter(lambda v: v is not None), 0.1),
        content_type=maybe(
            "application/json",
            st.sampled_from([None, "text/plain", "APPLICATION/JSON"]) | short_property,
            0.15,
        ),
        headers=maybe({}, forged_headers, 0.15),
        garbage=maybe(
            None,
            st.binary(max_size=200)
            | st.sampled_from([b"", b"[]", b"null", b'{"operation"', b"\xff\xfe"]),
            0.05,
        ),
    )


def generate(count: int) -> list[Hostile]:
    """``count`` messages from a fixed seed (the same run every time)."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_messages())
    def collect(message: Hostile) -> None:
        drawn.append(message)

    collect()
    return drawn[:count]


# -- turning a generated message into AMQP ----------------------------------------------------

CLASS = {"create": "write", "update": "write", "delete": "write", "submit": "meta"}


@attrs.define
class Sent:
    index: int
    trace: str
    """In the body (the post's text for a create): finds its row and its dead letters."""
    message: Hostile
    correlation_id: str | None
    reply: str
    write: bool
    returned: bool = False


def envelope(message: Hostile, trace: str, author: str) -> bytes:
    if message.garbage is not None:
        return message.garbage + trace.encode()
    payload: Any
    if message.payload_kind == "record":
        payload = {"author": author, "body": trace}
    elif message.payload_kind == "query":
        payload = {"query": "by_author", "params": {"author": author}, "trace": trace}
    else:
        payload = {"trace": trace, "junk": message.meta.get("origin")}
    body = orjson.dumps(
        {
            "operation": message.operation,
            "template": message.template,
            "payload": payload,
            "meta": message.meta,
        }
    )
    return body.replace(LONE_SURROGATE.encode(), b"\\ud800")


def routing(message: Hostile, queue_of: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(exchange, routing key, extra headers) for the message."""
    template = message.template if isinstance(message.template, str) else "x"
    klass = CLASS.get(message.operation, "read") if isinstance(message.operation, str) else "read"
    key = {
        "exact": f"{template}.{klass}",
        "wrong-class": f"{template}.{'read' if klass == 'write' else 'write'}",
        "wrong-template": f"spew_profile.{klass}"
        if template != "spew_profile"
        else "spew_post.read",
        "direct": "",
    }.get(message.route, message.route)
    if len(key.encode("utf-8", "surrogatepass")) > 255 or LONE_SURROGATE in key:
        key = "hostile.read"
    if message.route == "direct":
        forged = "spew_post.write" if klass == "read" else "spew_post.read"
        return "", queue_of[klass], {"x-beds-routing-key": forged}
    return "events", key, {}


async def run_messages(
    channel: aiormq.abc.AbstractChannel,
    messages: list[Hostile],
    *,
    exchange: str,
    author: str,
    prefix: str,
    queues: dict[str, str],
    queue_of: dict[str, str],
) -> list[Sent]:
    sent: list[Sent] = []
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int, message: Hostile) -> None:
        trace = f"{prefix}{index}"
        reply_to = {READY: queues[READY], REFUSES: queues[REFUSES], GONE: queues[GONE]}.get(
            message.reply
        )
        hostile_correlation = message.correlation_hostile is not None and message.reply == READY
        correlation = message.correlation_hostile if hostile_correlation else trace
        target, key, extra = routing(message, queue_of)
        record = Sent(
            index=index,
            trace=trace,
            message=message,
            correlation_id=None if hostile_correlation else trace,
            reply=message.reply,
            write=isinstance(message.operation, str)
            and message.operation in CLASS
            and message.garbage is None,
        )
        sent.append(record)
        properties = Basic.Properties(
            content_type=message.content_type,
            correlation_id=correlation,
            reply_to=reply_to,
            # The tracking id: aiormq matches a returned message to its publish by it.
            message_id=trace,
            headers={**message.headers, **extra} or None,
        )
        async with slots:
            try:
                await channel.basic_publish(
                    envelope(message, trace, author),
                    exchange=exchange if target == "events" else "",
                    routing_key=key,
                    properties=properties,
                    mandatory=True,
                )
            except aiormq.exceptions.PublishError:
                record.returned = True  # no queue is bound for the key: RabbitMQ said so

    await asyncio.gather(*(one(index, message) for index, message in enumerate(messages)))
    return sent


async def drain(channel: aiormq.abc.AbstractChannel, queue: str, quiet: float) -> list[Any]:
    """Every message of ``queue`` until none arrived for ``quiet`` seconds."""
    taken: list[Any] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < quiet:
        message = await channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is not None:
            taken.append(message)
            idle_since = time.monotonic()
        else:
            await asyncio.sleep(0.05)
    return taken


def unacknowledged(vhost: str, env: str) -> dict[str, int]:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_unacknowledged"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    counts: dict[str, int] = {}
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith(f"beds.{env}.") and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


async def test_hostile_messages_are_answered_or_dead_lettered_and_nothing_wedges(
    amqp_url: str, stores: Stores, start_served: StartServed, figures: Figures
) -> None:
    messages = generate(MESSAGES)
    assert len(messages) == MESSAGES
    served = start_served(instances=8)
    env = served.env
    prefix = f"hw{uuid.uuid4().hex[:8]}x"
    author = f"hostile_{uuid.uuid4().hex[:12]}"
    started = time.monotonic()
    connection = await aiormq.connect(amqp_url)
    try:
        async with client_of(served, amqp_url) as client:
            await wait_ready(served, client)
        channel = await connection.channel(publisher_confirms=True)
        queues = {
            READY: f"{prefix}-replies",
            REFUSES: f"{prefix}-refuses",
            GONE: f"{prefix}-never-declared",
        }
        await channel.queue_declare(queues[READY], auto_delete=True)
        await channel.queue_declare(
            queues[REFUSES],
            auto_delete=True,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        queue_of = {
            "read": f"beds.{env}.appServer.rBroker",
            "write": f"beds.{env}.appServer.wBroker",
            "meta": f"beds.{env}.appServer.mBroker",
        }
        sent = await run_messages(
            channel,
            messages,
            exchange=f"beds.events.{env}",
            author=author,
            prefix=prefix,
            queues=queues,
            queue_of=queue_of,
        )
        published_s = time.monotonic() - started
        replies = await drain(channel, queues[READY], quiet=3.0)
        dead = await drain(channel, f"beds.{env}.dead", quiet=1.0)

        # A ping still answers within a second.
        async with client_of(served, amqp_url, timeout=1.0) as client:
            ping_started = time.monotonic()
            assert (await client.ping(timeout=1.0)).ok
            ping_ms = (time.monotonic() - ping_started) * 1000
        await channel.queue_delete(queues[READY])
        await channel.queue_delete(queues[REFUSES])
    finally:
        await connection.close()

    vhost = amqp_url.rsplit("/", 1)[-1] or "/"
    unacked = {name: count for name, count in unacknowledged(vhost, env).items() if count}

    by_correlation: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    codes: collections.Counter[str] = collections.Counter()
    for reply in replies:
        answer = orjson.loads(reply.body)
        code = "ok" if answer["ok"] else answer["error"]["code"]
        codes[code] += 1
        assert answer["ok"] or CODE.match(code), answer
        correlation = reply.header.properties.correlation_id
        if correlation is not None:
            by_correlation[correlation].append(answer)
    dead_codes: collections.Counter[str] = collections.Counter()
    dead_traces: dict[str, str] = {}
    for letter in dead:
        headers = letter.header.properties.headers or {}
        code = str(headers.get("x-beds-error-code") or "x-death")
        dead_codes[code] += 1
        for found in re.findall(rf"{prefix}\d+".encode(), letter.body):
            dead_traces.setdefault(found.decode(), code)

    tracked = {record.trace: record for record in sent}
    unanswered = [
        record.index
        for record in sent
        if record.reply == READY
        and record.correlation_id is not None
        and not record.returned
        and len(by_correlation.get(record.correlation_id, [])) != 1
    ]
    not_dead_lettered = [
        record.index
        for record in sent
        if record.reply == NONE and not record.returned and record.trace not in dead_traces
    ]
    rows = await stored_posts(stores, author)
    unaccounted = []
    for row_id, body in rows.elements():
        record = tracked.get(body)
        if record is None:
            unaccounted.append(body)
            continue
        answers = by_correlation.get(record.correlation_id or "", [])
        answered = any(a["ok"] and a["data"].get("id") == row_id for a in answers)
        kept = dead_traces.get(body) == "BEDS-500R"
        if not (answered or kept or (record.reply == READY and record.correlation_id is None)):
            unaccounted.append(body)
    traceback_lines = served.output().count("Traceback")

    figures(
        {
            "messages": len(sent),
            "returned_unroutable": sum(record.returned for record in sent),
            "replies": len(replies),
            "reply_codes": dict(sorted(codes.items())),
            "dead_letters": dict(sorted(dead_codes.items())),
            "rows_stored": sum(rows.values()),
            "published_s": round(published_s, 1),
            "ping_ms": round(ping_ms, 1),
            "unacknowledged": unacked,
            "tracebacks": traceback_lines,
        }
    )
    assert not unanswered, (
        f"{len(unanswered)} messages without exactly one reply: {unanswered[:10]}"
    )
    assert not not_dead_lettered, (
        f"messages without reply_to not dead-lettered: {not_dead_lettered[:10]}"
    )
    assert not unaccounted, f"rows stored whose caller learned nothing: {unaccounted[:10]}"
    stored_traces = collections.Counter(body for (_, body) in rows.elements())
    assert all(count == 1 for count in stored_traces.values()), "a write ran twice"
    refused_but_stored = [
        record.index
        for record in sent
        if record.trace in stored_traces
        and any(not a["ok"] for a in by_correlation.get(record.correlation_id or "", []))
    ]
    assert not refused_but_stored, f"refused requests that stored a row: {refused_but_stored[:10]}"
    assert not unacked, f"unacknowledged messages left: {unacked}"
    assert ping_ms < 1000
    assert traceback_lines == 0, served.output()[-5000:]


async def test_more_oversized_requests_than_the_prefetch_are_refused_and_pings_still_answer(
    amqp_url: str, stores: Stores, start_served: StartServed
) -> None:
    served = start_served(instances=2)  # prefetch 4
    author = f"over_{uuid.uuid4().hex[:12]}"
    connection = await aiormq.connect(amqp_url)
    try:
        async with client_of(served, amqp_url) as client:
            await wait_ready(served, client)
        channel = await connection.channel(publisher_confirms=True)
        replies = (await channel.queue_declare("", exclusive=True)).queue
        assert replies is not None
        body = orjson.dumps(
            {
                "operation": "create",
                "template": "spew_post",
                "payload": {"author": author, "body": "never stored"},
                "meta": {"event_id": "e" * 300},  # once made the reply fail after the write
            }
        )
        await asyncio.gather(
            *(
                channel.basic_publish(
                    body,
                    exchange=f"beds.events.{served.env}",
                    routing_key="spew_post.write",
                    properties=Basic.Properties(reply_to=replies, correlation_id=str(n)),
                )
                for n in range(50)
            )
        )
        answers = [orjson.loads(message.body) for message in await drain(channel, replies, 2.0)]
        async with client_of(served, amqp_url, timeout=1.0) as client:
            assert (await client.ping(timeout=1.0)).ok
    finally:
        await connection.close()
    assert len(answers) == 50
    assert {answer["error"]["code"] for answer in answers} == {"BEDS-400"}
    assert not await stored_posts(stores, author)
    assert "Traceback" not in served.output()
