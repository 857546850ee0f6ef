"""Hostile wire, generated: thousands of messages no BEDS client would send, against ``beds run``.

Raw aiormq, not BedsClient. The corpus (:mod:`tests.integration.hostile.corpus`) is drawn by
hypothesis from a fixed seed: ``BEDS_HOSTILE_EXAMPLES`` messages (5,000 by default; set more
for a longer run). They are published with up to ``IN_FLIGHT`` unconfirmed at once, each
tracked by its trace (``{prefix}{index:05d}``, in its body, its correlation id and, for a
create, the post it stores). A caller's connection closes halfway through the run.

Then, for the whole run, every message got what the contract promises (:func:`corpus.judge`):

- a caller that listens got exactly one reply, with a catalogue code or ``ok``, and the code the
  contract names when it names one; the control group (sound requests) succeeded;
- a message without a usable ``reply_to`` or whose properties do not decode is in the
  dead-letter queue (as is one that expired in a broker queue);
- every row the run stored belongs to a create whose caller got ``201`` with that id, or whose
  outcome is kept: a ``BEDS-500R`` dead letter with the reply, or (a caller that vanished) a
  resend with the same idempotency key answered ``201`` with the same id; no write ran twice,
  nothing refused stored anything;
- no queue of the environment holds an unacknowledged message, a ping answers within a second,
  and the node's log has no traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

import aiormq
import attrs
import orjson
import pytest
from pamqp.commands import Basic

from beds.auth import bearer
from tests.helpers import operator_token
from tests.integration.hostile import corpus
from tests.integration.hostile.corpus import Hostile, Verdict
from tests.integration.hostile.wire import (
    CODE,
    DIRECT_REPLY_TO,
    DeadLetter,
    LogWindow,
    RawStr,
    dead_letters,
    marked_rows,
    raw_ping,
    settled_queues,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiormq.abc import AbstractChannel, DeliveredMessage

    from tests.helpers import Figures
    from tests.integration.nodes import Served, Stores

MESSAGES = int(os.environ.get("BEDS_HOSTILE_EXAMPLES", "5000"))
IN_FLIGHT = 200
"""Publishes awaiting their confirm at once."""

pytestmark = [
    pytest.mark.mariadb,
    pytest.mark.mongodb,
    pytest.mark.slow,
    pytest.mark.timeout(max(120, MESSAGES // 20)),
]


@attrs.define
class Sent:
    """One message as sent, and what came back for it."""

    index: int
    trace: str
    message: Hostile
    verdict: Verdict
    body: bytes
    correlation: Any
    """The AMQP ``correlation_id`` sent (the trace, a hostile text ending with it, or not)."""
    reply_to: str | None
    keyed: bool
    """A write given an idempotency key of its own (its caller vanishes: resend proves it)."""
    mandatory: bool
    live_vanishing: bool = False
    """Published by the caller that vanishes, while it was still there."""
    returned: bool = False
    publish_error: str = ""
    replies: list[dict[str, Any]] = attrs.field(factory=list)
    letters: list[DeadLetter] = attrs.field(factory=list)

    @property
    def tracked(self) -> bool:
        """The reply carries a correlation id the test can match."""
        return isinstance(self.correlation, str) and _echoed(self.correlation)


def _echoed(correlation: str) -> bool:
    """The node echoes a correlation id that AMQP can carry back (UTF-8, 255 bytes)."""
    if isinstance(correlation, RawStr):
        try:
            correlation.raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return bool(correlation.raw)
    return bool(correlation)


def _correlation(message: Hostile, trace: str) -> Any:
    """The correlation id to send: hostile texts keep the trace at their end when they can."""
    hostile = message.correlation
    if hostile == "trace":
        return trace
    if hostile is None or hostile == "":
        return hostile
    if isinstance(hostile, RawStr):
        raw = hostile.raw[: 255 - len(trace)] + trace.encode()
        return RawStr(raw)
    room = 255 - len(trace)
    raw = hostile.encode("utf-8", "surrogatepass")[:room]
    return raw.decode("utf-8", "ignore") + trace


@attrs.define
class Run:
    """The callers, queues and records of one run."""

    amqp_url: str
    served: Served
    prefix: str
    author: str
    connection: aiormq.abc.AbstractConnection
    channel: AbstractChannel
    """Publishes (with confirms) and consumes direct reply-to and the ready queues."""
    vanishing: aiormq.abc.AbstractConnection
    vanishing_channel: AbstractChannel
    queues: dict[str, str]
    sent: list[Sent] = attrs.field(factory=list)
    by_correlation: dict[str, Sent] = attrs.field(factory=dict)
    by_private_queue: dict[str, Sent] = attrs.field(factory=dict)
    strays: list[tuple[str, bytes]] = attrs.field(factory=list)
    vanishing_replies: dict[str, list[dict[str, Any]]] = attrs.field(
        factory=lambda: collections.defaultdict(list)
    )

    @property
    def exchange(self) -> str:
        return f"beds.events.{self.served.env}"

    @property
    def credential(self) -> dict[str, Any]:
        """The operator's ``authorization`` header for this node's environment."""
        return {"authorization": bearer(operator_token(self.served.env))}

    def broker_queue(self, klass: str) -> str:
        return f"beds.{self.served.env}.appServer.{corpus.BROKER_OF_CLASS[klass]}"

    async def on_reply(self, message: DeliveredMessage) -> None:
        queue = message.routing_key or ""
        record = self.by_private_queue.get(queue)
        if record is None:
            correlation = message.header.properties.correlation_id
            record = self.by_correlation.get(correlation) if correlation else None
        if record is None:
            self.strays.append((queue, message.body))
            return
        try:
            answer = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            answer = {"unreadable": message.body[:200].decode("utf-8", "replace")}
        record.replies.append(answer)

    async def on_vanishing_reply(self, message: DeliveredMessage) -> None:
        correlation = message.header.properties.correlation_id or ""
        self.vanishing_replies[correlation].append(orjson.loads(message.body))


async def open_run(amqp_url: str, served: Served) -> Run:
    prefix = f"hw{uuid.uuid4().hex[:8]}x"
    connection = await aiormq.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    vanishing = await aiormq.connect(amqp_url)
    vanishing_channel = await vanishing.channel(publisher_confirms=True)
    vanished = await vanishing_channel.queue_declare("", exclusive=True)
    assert vanished.queue is not None
    queues = {
        corpus.READY_QUEUE: f"{prefix}.ready",
        corpus.READY_DIRECT: DIRECT_REPLY_TO,
        corpus.REFUSES: f"{prefix}.refuses",
        corpus.DELETED: f"{prefix}.deleted",
        corpus.NEVER: f"{prefix}.never-declared",
        corpus.VANISHED: vanished.queue,
        corpus.STALE_DIRECT: await stale_direct_address(amqp_url),
        corpus.SELF: f"beds.{served.env}.appServer.rBroker",
    }
    run = Run(
        amqp_url,
        served,
        prefix,
        f"hostile_{uuid.uuid4().hex[:12]}",
        connection,
        channel,
        vanishing,
        vanishing_channel,
        queues,
    )
    await channel.basic_consume(DIRECT_REPLY_TO, run.on_reply, no_ack=True)
    await channel.queue_declare(queues[corpus.READY_QUEUE], exclusive=True)
    await channel.basic_consume(queues[corpus.READY_QUEUE], run.on_reply, no_ack=True)
    await channel.queue_declare(
        queues[corpus.REFUSES],
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await channel.queue_declare(queues[corpus.DELETED])
    await channel.queue_delete(queues[corpus.DELETED])
    await vanishing_channel.basic_consume(vanished.queue, run.on_vanishing_reply, no_ack=True)
    return run


async def stale_direct_address(amqp_url: str) -> str:
    """A direct reply-to address (``amq.rabbitmq.reply-to.…``) whose channel has closed."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.basic_consume(DIRECT_REPLY_TO, _ignore, no_ack=True)
        probe = await channel.queue_declare("", exclusive=True)
        assert probe.queue is not None
        await channel.basic_publish(
            b"probe", routing_key=probe.queue, properties=Basic.Properties(reply_to=DIRECT_REPLY_TO)
        )
        for _ in range(100):
            message = await channel.basic_get(probe.queue, no_ack=True)
            if message.delivery_tag is not None:
                address = message.header.properties.reply_to
                assert address is not None
                return address
            await asyncio.sleep(0.02)
        raise AssertionError("the direct reply-to probe did not arrive")
    finally:
        await connection.close()


async def _ignore(message: DeliveredMessage) -> None:
    return None


def prepare(run: Run, messages: list[Hostile]) -> None:
    """Give every message its trace, body, properties and verdict."""
    for index, message in enumerate(messages):
        trace = f"{run.prefix}{index:05d}"
        correlation = _correlation(message, trace)
        reply_to = run.queues.get(message.reply)
        keyed = message.reply in (corpus.VANISHED, corpus.STALE_DIRECT)
        message_id = trace if message.message_id == "trace" else message.message_id
        record = Sent(
            index=index,
            trace=trace,
            message=message,
            verdict=corpus.judge(
                message,
                correlation=correlation,
                # aiormq gives a message without one a random message_id
                message_id=message_id or "random",
            ),
            body=corpus.to_body(message, trace, run.author, keyed=keyed),
            correlation=correlation,
            reply_to=reply_to,
            keyed=keyed,
            mandatory=False,
        )
        # Returned messages are matched to their publish by message_id: not when it does
        # not decode (aiormq would only log the return).
        record.mandatory = message_id == trace and record.verdict.decodes
        if message.reply in corpus.OBSERVED and not record.tracked:
            # Its reply cannot be matched by correlation id: a queue of its own.
            record.reply_to = f"{run.prefix}.private.{index}"
            run.by_private_queue[record.reply_to] = record
        elif record.tracked:
            run.by_correlation[str(correlation)] = record
        run.sent.append(record)


async def publish_all(run: Run) -> None:
    """Publish every message, ``IN_FLIGHT`` at a time; the vanishing caller leaves halfway."""
    for queue in run.by_private_queue:
        await run.channel.queue_declare(queue, exclusive=True)
        await run.channel.basic_consume(queue, run.on_reply, no_ack=True)
    slots = asyncio.Semaphore(IN_FLIGHT)
    half = len(run.sent) // 2
    await asyncio.gather(*(publish(run, record, slots) for record in run.sent[:half]))
    await run.vanishing.close()  # its exclusive queue goes with it, replies in flight too
    await asyncio.gather(*(publish(run, record, slots) for record in run.sent[half:]))


async def publish(run: Run, record: Sent, slots: asyncio.Semaphore) -> None:
    message = record.message
    channel = run.channel
    if message.reply == corpus.VANISHED and not run.vanishing.is_closed:
        channel = run.vanishing_channel
        record.live_vanishing = True
    # A member's credential, so sound writes are served; the generated headers come after it.
    headers = {**run.credential, **message.headers}
    if message.route == corpus.STRAIGHT:
        exchange, key = "", run.broker_queue(message.straight_to)
        if message.forged_key is not None:
            headers["x-beds-routing-key"] = message.forged_key
    else:
        exchange, key = run.exchange, corpus.routing_key(message)
    message_id = record.trace if message.message_id == "trace" else message.message_id
    async with slots:
        try:
            await channel.basic_publish(
                record.body,
                exchange=exchange,
                routing_key=key,
                properties=Basic.Properties(
                    content_type=message.content_type,
                    correlation_id=record.correlation,
                    reply_to=record.reply_to,
                    message_id=message_id,
                    headers=headers or None,
                    **message.properties,
                ),
                mandatory=record.mandatory,
            )
        except aiormq.exceptions.PublishError:
            record.returned = True  # RabbitMQ said no queue is bound for the key
        except Exception as exc:  # the test's own channel failing is reported, not hidden
            record.publish_error = f"{type(exc).__name__}: {exc}"[:300]


async def resend_keyed(run: Run, records: list[Sent]) -> dict[str, dict[str, Any]]:
    """Send the keyed writes of vanished callers again (same body, same key), politely."""
    answers: dict[str, dict[str, Any]] = {}
    got: dict[str, asyncio.Future[DeliveredMessage]] = {}
    queue = (await run.channel.queue_declare("", exclusive=True)).queue
    assert queue is not None

    async def on_answer(message: DeliveredMessage) -> None:
        waiter = got.get(message.header.properties.correlation_id or "")
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    await run.channel.basic_consume(queue, on_answer, no_ack=True)
    loop = asyncio.get_running_loop()
    for record in records:
        correlation = f"resend-{record.trace}"
        got[correlation] = loop.create_future()
        with contextlib.suppress(aiormq.exceptions.AMQPError):  # a queue RabbitMQ lost: nack
            await run.channel.basic_publish(
                record.body,
                exchange=run.exchange,
                routing_key="spew_post.write",
                properties=Basic.Properties(
                    content_type="application/json",
                    correlation_id=correlation,
                    reply_to=queue,
                    message_id=correlation,
                    headers=run.credential,
                ),
            )
    if got:
        await asyncio.wait(list(got.values()), timeout=10)
    for record in records:
        waiter = got[f"resend-{record.trace}"]
        if waiter.done():
            answers[record.trace] = orjson.loads(waiter.result().body)
    return answers


def assign_letters(run: Run, letters: list[DeadLetter]) -> list[DeadLetter]:
    """Attach each dead letter to its message: the trace in its body or correlation id, else
    the same body (a dead letter keeps the body as sent). Return those that match none."""
    pattern = re.compile(rf"{run.prefix}(\d{{5}})".encode())
    by_trace = {record.trace: record for record in run.sent}
    by_body: dict[bytes, list[Sent]] = collections.defaultdict(list)
    for sent in run.sent:
        by_body[sent.body].append(sent)
    unmatched = []
    for letter in letters:
        found = pattern.search(letter.body) or pattern.search(
            (letter.correlation_id or "").encode("utf-8", "surrogateescape")
        )
        record: Sent | None = by_trace.get(found.group(0).decode()) if found else None
        if record is None:
            # Messages without a trace in their body may share it: the first that expects a
            # letter and has none yet.
            same = sorted(
                by_body.get(letter.body, []),
                key=lambda one: (bool(one.letters), one.verdict.answerable),
            )
            record = same[0] if same else None
        if record is None:
            unmatched.append(letter)
        else:
            record.letters.append(letter)
    return unmatched


def _ok_id(answer: dict[str, Any] | None) -> Any:
    if not answer or answer.get("ok") is not True or not isinstance(answer.get("data"), dict):
        return None
    return answer["data"].get("id")


def _kept_ids(record: Sent) -> set[Any]:
    """Ids of successful replies kept in dead letters (``x-beds-reply``, or the reply itself
    when it came back to the node as a request)."""
    ids = set()
    for letter in record.letters:
        ids.add(_ok_id(letter.reply()))
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.loads(letter.body)
            ids.add(_ok_id(body) if isinstance(body, dict) else None)
    ids.discard(None)
    return ids


@attrs.define
class Findings:
    """Violations by class, each with up to a few example messages."""

    found: dict[str, list[str]] = attrs.field(factory=lambda: collections.defaultdict(list))

    def add(self, kind: str, record: Sent | None, detail: str) -> None:
        where = f"#{record.index} {describe(record)}: " if record is not None else ""
        self.found[kind].append(where + detail)

    def summary(self) -> str:
        return "\n".join(
            f"- {kind}: {len(items)}; e.g.\n    " + "\n    ".join(items[:3])
            for kind, items in sorted(self.found.items())
        )


def describe(record: Sent) -> str:
    message = record.message
    parts = {
        "op": message.operation,
        "template": message.template,
        "route": message.route,
        "reply": message.reply,
        "body": message.body_form,
        "why": record.verdict.why,
    }
    if isinstance(message.meta, dict) and message.meta:
        parts["meta"] = {key: _short(value) for key, value in message.meta.items()}
    elif message.meta != {}:
        parts["meta"] = _short(message.meta)
    for name in ("content_type", "message_id", "correlation"):
        value = getattr(message, name)
        if value not in ("application/json", "trace"):
            parts[name] = _short(value)
    if message.headers:
        parts["headers"] = {_short(key): _short(value) for key, value in message.headers.items()}
    if message.properties:
        parts["properties"] = {key: _short(value) for key, value in message.properties.items()}
    return repr(parts)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}…({len(text)} chars)"


def check_replies(run: Run, findings: Findings) -> None:
    for record in run.sent:
        verdict, message = record.verdict, record.message
        if record.publish_error:
            findings.add("the test could not publish", record, record.publish_error)
            continue
        expired = any(letter.code == "x-death:expired" for letter in record.letters)
        if record.returned and verdict.routable:
            findings.add("returned although routable", record, "")
        # (A returned message whose properties do not decode cannot be matched to its publish.)
        if record.mandatory and not record.returned and not verdict.routable and verdict.decodes:
            findings.add("unroutable but not returned", record, "")
        for answer in record.replies:
            error = answer.get("error") or {}
            coded = (
                isinstance(answer.get("ok"), bool)
                and isinstance(answer.get("status"), int)
                and (answer["ok"] or CODE.match(str(error.get("code"))) is not None)
            )
            if not coded:
                findings.add("reply without a catalogue code", record, repr(answer)[:300])
        observed = message.reply in corpus.OBSERVED
        if not observed:
            continue
        should_answer = verdict.routable and verdict.answerable and not expired
        if should_answer and len(record.replies) != 1:
            findings.add(
                "caller not answered exactly once",
                record,
                f"{len(record.replies)} replies; letters {[x.code for x in record.letters]}",
            )
        if not verdict.answerable and record.replies:
            findings.add("reply to a message that cannot be answered", record, "")
        for answer in record.replies:
            code = answer.get("error", {}) and answer["error"].get("code")
            if verdict.codes is not None and (answer.get("ok") or code not in verdict.codes):
                findings.add(
                    "wrong outcome for a refused request",
                    record,
                    f"expected {sorted(verdict.codes)}, got {answer.get('status')} {code}",
                )
            if verdict.serve and not answer.get("ok"):
                findings.add(
                    "sound request not served",
                    record,
                    f"{answer.get('status')} {code} {answer.get('error', {}).get('details')}",
                )


def check_letters(run: Run, unmatched: list[DeadLetter], findings: Findings) -> None:
    for letter in unmatched:
        if not _is_reply(letter.body):  # a reply sent to the node's own queue comes back
            findings.add("dead letter of no message", None, f"{letter.code} {letter.body[:120]!r}")
    for record in run.sent:
        verdict = record.verdict
        for letter in record.letters:
            if letter.code == "x-death:rejected":
                findings.add("rejected: the node's own dead letter failed", record, "")
            elif not (CODE.match(letter.code) or letter.code.startswith("x-death:")):
                findings.add("dead letter without a code", record, repr(letter.headers)[:300])
        if record.publish_error or not verdict.routable:
            continue
        if not (verdict.answerable and verdict.decodes) and not record.letters:
            findings.add("unanswerable message not dead-lettered", record, verdict.why)


def _is_reply(body: bytes) -> bool:
    with contextlib.suppress(orjson.JSONDecodeError):
        answer = orjson.loads(body)
        return isinstance(answer, dict) and {"ok", "status", "error"} <= answer.keys()
    return False


def check_rows(
    run: Run,
    rows: list[tuple[int, str, str]],
    resent: dict[str, dict[str, Any]],
    unmatched: list[DeadLetter],
    findings: Findings,
) -> None:
    # Replies that came back to the node's own queue as requests, without a correlation id
    # to tell whose they were.
    returned_replies = {
        _ok_id(orjson.loads(letter.body)) for letter in unmatched if _is_reply(letter.body)
    }
    by_trace = {record.trace: record for record in run.sent}
    stored: dict[str, list[int]] = collections.defaultdict(list)
    for row_id, _, body in rows:
        stored[body].append(row_id)
    for trace, ids in stored.items():
        record = by_trace.get(trace)
        if record is None:
            findings.add("row of no message", None, f"{trace} ids {ids}")
            continue
        if len(ids) > 1:
            findings.add("write ran twice", record, f"ids {ids}")
        row_id = ids[0]
        verdict = record.verdict
        if verdict.codes is not None:
            findings.add("refused request stored a row", record, f"id {row_id}, {verdict.why}")
        refusals = [answer for answer in record.replies if answer.get("ok") is False]
        if refusals:
            code = refusals[0].get("error", {}).get("code")
            findings.add("answered with an error but stored", record, f"{code}, id {row_id}")
        answered = any(_ok_id(answer) == row_id for answer in record.replies)
        answered = answered or any(
            _ok_id(answer) == row_id
            for answer in run.vanishing_replies.get(str(record.correlation), [])
        )
        kept = row_id in _kept_ids(record) or (
            record.message.reply == corpus.SELF and row_id in returned_replies
        )
        proven = _ok_id(resent.get(trace)) == row_id
        if not (answered or kept or proven):
            findings.add(
                "write ran, caller not answered, outcome not kept",
                record,
                f"id {row_id}; letters {[letter.code for letter in record.letters]}; "
                f"resend {resent.get(trace, {}).get('status')}",
            )
    for record in run.sent:
        if (record.message.operation, record.message.template) != ("create", "spew_post"):
            continue
        for answer in record.replies:
            answer_id = _ok_id(answer)
            if answer_id is not None and answer_id not in stored.get(record.trace, []):
                findings.add("201 without its row", record, f"id {answer_id}")


def figures_of(run: Run, rows: int, letters: list[DeadLetter]) -> dict[str, Any]:
    codes: collections.Counter[str] = collections.Counter()
    for record in run.sent:
        for answer in record.replies:
            codes[str(answer.get("status")) if answer.get("ok") else answer["error"]["code"]] += 1
    verdicts = collections.Counter(
        "serve" if record.verdict.serve else ("refuse" if record.verdict.codes else "other")
        for record in run.sent
    )
    return {
        "messages": len(run.sent),
        "verdicts": dict(sorted(verdicts.items())),
        "reply_targets": dict(
            sorted(collections.Counter(r.message.reply for r in run.sent).items())
        ),
        "returned": sum(record.returned for record in run.sent),
        "replies": dict(sorted(codes.items())),
        "stray_replies": len(run.strays),
        "dead_letters": dict(sorted(collections.Counter(x.code for x in letters).items())),
        "rows": rows,
    }


async def test_hostile_messages_are_answered_or_dead_lettered_and_nothing_wedges(
    amqp_url: str,
    stores: Stores,
    serve: Callable[..., Awaitable[Served]],
    figures: Figures,
) -> None:
    started = time.monotonic()
    messages = corpus.generate(MESSAGES)
    assert len(messages) == MESSAGES
    generated_s = time.monotonic() - started
    served = await serve(instances=8)
    window = LogWindow(served)
    run = await open_run(amqp_url, served)
    try:
        prepare(run, messages)
        publishing = time.monotonic()
        await publish_all(run)
        published_s = time.monotonic() - publishing
        unsettled = await settled_queues(
            amqp_url,
            served.env,
            empty=tuple(run.broker_queue(klass) for klass in ("read", "write", "meta")),
            seconds=60,
        )
        settled_s = time.monotonic() - publishing
        await asyncio.sleep(0.5)  # replies routed before the acks are on their way to us
        letters = await dead_letters(run.channel, served.env, quiet=0.5)
        unmatched = assign_letters(run, letters)
        rows = await marked_rows(stores, run.prefix)
        stored = {body for _, _, body in rows}
        to_resend = [
            record
            for record in run.sent
            if record.keyed
            and record.trace in stored
            and f'"k-{record.trace}"'.encode() in record.body
            and not _kept_ids(record)
        ]
        resent = await resend_keyed(run, to_resend)
        rows_after = await marked_rows(stores, run.prefix)
        try:
            ping_s = await raw_ping(amqp_url, run.exchange, timeout=1.0)
        except TimeoutError:
            ping_s = float("inf")
        with contextlib.suppress(Exception):
            await run.channel.queue_delete(run.queues[corpus.REFUSES])
    finally:
        with contextlib.suppress(Exception):
            await run.connection.close()
        with contextlib.suppress(Exception):
            await run.vanishing.close()

    findings = Findings()
    for queue, body in run.strays:
        findings.add("reply matching no message", None, f"{queue}: {body[:200]!r}")
    check_replies(run, findings)
    check_letters(run, unmatched, findings)
    check_rows(run, rows_after, resent, unmatched, findings)
    if len(rows_after) != len(rows):
        findings.add(
            "resend with the key ran the write again", None, f"{len(rows)} → {len(rows_after)}"
        )
    for name, problem in unsettled.items():
        findings.add("queue not settled", None, f"{name}: {problem}")
    if ping_s >= 1.0:
        findings.add("ping slower than a second", None, f"{ping_s:.2f} s")
    if served.process.poll() is not None:
        findings.add("the node exited", None, f"exit code {served.process.returncode}")
    tracebacks = window.tracebacks()
    for line in tracebacks:
        findings.add("traceback in the node log", None, line)
    figures(
        {
            **figures_of(run, len(rows), letters),
            "resent": len(to_resend),
            "generated_s": round(generated_s, 1),
            "published_s": round(published_s, 1),
            "settled_s": round(settled_s, 1),
            "ping_ms": round(ping_s * 1000, 1),
            "unsettled": unsettled,
            "tracebacks": len(tracebacks),
            "findings": {kind: len(items) for kind, items in sorted(findings.found.items())},
        }
    )
    assert not findings.found, "\n" + findings.summary()
