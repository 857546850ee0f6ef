"""The hostile corpus: generated messages, how each goes on the wire, and what must happen to it.

:func:`generate` draws :class:`Hostile` messages with hypothesis from a fixed seed. Most are
sound with one or a few hostile parts, so that the deeper paths (writes that run, replies that
cannot be delivered) are reached too; every part varies: each ``meta`` field and AMQP property
in type, size (0 B to 64 KiB; AMQP short strings stop at 255 bytes) and content (emoji, NUL,
control characters, lone surrogates, bytes that are not UTF-8), routing keys and templates
mismatched on purpose, forged ``x-beds-*`` and ``x-death`` headers, bodies that are not JSON,
reply queues that refuse replies or are gone, callers that vanish. Three properties stay sound
because RabbitMQ or pamqp refuse them before any node sees them: ``user_id`` (RabbitMQ closes
the sender's channel unless it names the sender), ``expiration`` (likewise unless a number of
milliseconds) and ``cluster_id`` (pamqp: must be empty).

:func:`judge` says, from docs/wire-contract.md alone, what the node must do with a message
(:class:`Verdict`): refuse it and with which codes, answer it or dead-letter it, or (the
control group) serve it. It does not ask the node's code.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any, Final

import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pamqp import encode

from tests.integration.hostile.wire import RawStr

__all__ = (
    "NO_REPLY",
    "OBSERVED",
    "FarTime",
    "Hostile",
    "Verdict",
    "generate",
    "judge",
    "routing_key",
    "to_body",
)

# -- reply targets ------------------------------------------------------------------------------

READY_QUEUE, READY_DIRECT = "ready-queue", "ready-direct"
"""Callers that listen: a named queue, or RabbitMQ's direct reply-to on the publishing channel."""
REFUSES = "refuses"
"""A queue that refuses every message (``x-max-length`` 0, ``x-overflow = reject-publish``)."""
DELETED, NEVER = "deleted", "never"
"""A queue deleted before the run, and a name that never was a queue."""
VANISHED = "vanished"
"""The exclusive queue of a caller whose connection closes in the middle of the run."""
STALE_DIRECT = "stale-direct"
"""A direct reply-to address whose channel closed before the run."""
SELF = "self"
"""The node's own read queue: the reply comes back to the node as a request."""
NO_REPLY = "none"
"""No ``reply_to`` at all."""
OBSERVED: Final = frozenset({READY_QUEUE, READY_DIRECT})
"""Targets whose replies the test reads."""

# -- routes ---------------------------------------------------------------------------------------

EXACT, WRONG_CLASS, WRONG_TEMPLATE, STRAIGHT = "exact", "wrong-class", "wrong-template", "straight"
"""The body's own key, its template with another class, another template with its class, or
the default exchange straight to a broker queue (with a forged ``x-beds-routing-key``)."""

OPERATIONS: Final = ("create", "fetch", "update", "delete", "ping", "submit", "ticket")
CLASS: Final = {
    "create": "write",
    "update": "write",
    "delete": "write",
    "submit": "meta",
    "fetch": "read",
    "ticket": "read",
    "ping": "read",
}
BROKER_OF_CLASS: Final = {"read": "rBroker", "write": "wBroker", "meta": "mBroker"}
TEMPLATE_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
META_TEXT: Final = ("event_id", "parent_id", "correlation_id", "causation_id", "origin")
META_FIELDS: Final = (*META_TEXT, "depth", "idempotency_key", "deadline", "principal")


class Marker(str):
    """A placeholder in the body, filled in when the message is sent (deadlines, keys)."""

    __slots__ = ()


FUTURE, PAST = Marker("deadline:future"), Marker("deadline:past")
UNIQUE_KEY = Marker("key:unique")
"""An idempotency key no other message uses (``k-{trace}``)."""


@attrs.frozen
class Hostile:
    """One generated message, before the run gives it its trace (its tracking id)."""

    operation: Any
    template: Any
    payload: str
    """``record``, ``query``, ``empty``, ``key`` (update/delete of a row that does not exist),
    ``profile`` (a spew_profile record) or ``junk``."""
    meta: Any
    """A dict of JSON values (``Marker`` values are filled in), or a hostile non-object; the
    string ``"absent"`` leaves ``meta`` out."""
    top: dict[str, Any]
    """Top-level keys added to the envelope (``version``, unknown keys)."""
    body_form: str
    """``ascii`` or ``utf8`` JSON; ``dup-key``, ``bom``, ``trailing``, ``deep`` or ``garbage``."""
    garbage: bytes
    route: str
    """One of the route kinds above, or a routing key of its own (str or :class:`RawStr`)."""
    forged_key: Any
    """``x-beds-routing-key`` sent with a ``straight`` message (``None``: none)."""
    straight_to: str
    """The class whose broker queue a ``straight`` message is sent to."""
    reply: str
    correlation: Any
    """``"trace"``, ``None``, ``""``, a text the trace is appended to, or a :class:`RawStr`."""
    message_id: Any
    content_type: Any
    properties: dict[str, Any]
    """Other AMQP properties: content_encoding, message_type, app_id, priority, delivery_mode,
    timestamp, expiration."""
    headers: dict[str, Any]


# -- strategies -------------------------------------------------------------------------------

PIECES: Final = (
    "x",
    "é",
    "中",
    "😀",
    "👩\u200d👩\u200d👧",  # a ZWJ emoji sequence
    " ",
    "\x00",
    "\t",
    "\n",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\ufffd",
    "\U0010ffff",
    "\u0301",
    "\ud800",  # lone surrogates: an escape in ASCII JSON, bytes ED A0 80 in UTF-8 JSON
    "\udfff",
)
SIZES: Final = (0, 1, 2, 63, 64, 199, 200, 201, 254, 255, 256, 300, 1024, 4096, 65535, 65536)


def _sized(piece: str, size: int, lead: str) -> str:
    """``lead`` then ``piece`` repeated to about ``size`` bytes of UTF-8 (surrogates: 3 each)."""
    width = len(piece.encode("utf-8", "surrogatepass"))
    return (lead + piece * max(0, (size - len(lead)) // width))[: max(size, 0) or None]


sized_text = st.builds(
    _sized,
    st.sampled_from(PIECES),
    st.sampled_from(SIZES) | st.integers(min_value=0, max_value=300),
    st.sampled_from(["", "ok", "cli.dev."]),
)
hostile_text = st.one_of(
    st.text(max_size=24),
    st.text(st.characters(codec="utf-8"), max_size=8),
    sized_text,
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 64, 65, 2**63, 2**64, 1e11, 0.5, -0.0]),
    st.floats(),  # NaN and infinities become JSON that is not JSON
    hostile_text,
)
json_value = st.recursive(
    json_scalar,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=5,
)


_meta_text = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), max_size=40)
VALID_META: Final[dict[str, st.SearchStrategy[Any]]] = {
    "depth": st.integers(min_value=0, max_value=64),
    "deadline": st.sampled_from([FUTURE, FUTURE, PAST, None]),
    "idempotency_key": st.sampled_from([UNIQUE_KEY, UNIQUE_KEY, None, "shared-a", "shared-b"]),
    "principal": st.none() | _meta_text,
    **{
        field: _meta_text
        | st.sampled_from(["", "cli.dev.2b0e8f3c52e94a4f9a0c9d6ad1f0e7b4", "😀" * 63])
        for field in META_TEXT
    },
}
"""Values the contract accepts for each ``meta`` field (some still refused later, such as a
deadline that passed, or a key another message used)."""
_unknown_meta = st.sampled_from(["colour", "Event_id", "", "meta"])
_non_object_meta: st.SearchStrategy[Any] = st.sampled_from(["absent", None, [], "meta", 0])


@st.composite
def metas(draw: st.DrawFn) -> Any:
    shape = draw(_percent)
    if shape < 4:
        return draw(_non_object_meta)
    fields: dict[str, Any] = {}
    hostile_fields = draw(_percent)
    for field in META_FIELDS:
        roll = draw(_percent)
        if hostile_fields < 22 and roll < 20:
            fields[field] = draw(json_value)
        elif roll < 25:
            fields[field] = draw(VALID_META[field])
    if draw(_percent) < 2:
        fields[draw(_unknown_meta)] = draw(json_scalar)
    return fields


def _wire_text(text: str) -> str:
    """Text AMQP can carry: lone surrogates go as their (invalid UTF-8) bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return RawStr(text.encode("utf-8", "surrogatepass"))
    return text


short_text = st.one_of(
    st.text(max_size=20).filter(lambda text: len(text.encode("utf-8", "surrogatepass")) < 200),
    sized_text.filter(lambda text: len(text.encode("utf-8", "surrogatepass")) <= 255).map(
        _wire_text
    ),
    st.builds(RawStr, st.sampled_from([b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])),
)
"""An AMQP short string: at most 255 bytes, any content (bytes that are not UTF-8 too)."""


class FarTime(dt.datetime):
    """A ``timestamp`` property after the year 9999 (pamqp cannot decode it)."""

    def timestamp(self) -> float:
        return 1e15


header_value = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.booleans(),
        st.none(),
        st.floats(width=32, allow_nan=False, allow_infinity=False),
        st.decimals(places=2, min_value=-1000, max_value=1000),
        st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)),
        sized_text.map(
            lambda text: text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        ),
        st.builds(RawStr, st.sampled_from([b"\xff\xfe", b"spew_post.\xffread"])),
        st.binary(max_size=16).map(bytearray),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=4,
)
forged_headers = st.dictionaries(
    st.sampled_from(
        [
            "x-beds-routing-key",
            "x-beds-deliveries",
            "x-beds-error-code",
            "x-beds-executed",
            "x-beds-reply",
            "x-death",
            "x-other",
            "",
            "😀" * 32,  # a 128-byte header name
        ]
    )
    | st.builds(RawStr, st.just(b"x-\xff")),
    st.one_of(
        header_value,
        st.sampled_from(["spew_post.write", "spew_post.read", "beds.read", "BEDS-500R", True, 3]),
    ),
    max_size=3,
)


_percent = st.integers(0, 99)
_usual = st.sampled_from(
    ["create"] * 9 + ["fetch"] * 4 + ["ping"] * 2 + ["update", "delete", "submit", "ticket"]
)
_operation = json_value | st.sampled_from(["CREATE", "", "create "])
_template = st.sampled_from(["spew_profile", "beds", "beds_lineage", "nobody"]) | hostile_text
_payload = st.sampled_from(["record", "query", "empty", "key", "profile", "junk"])
_version = st.sampled_from([1, 2, 0, "1", True, 1.0, None])
_top_key = st.sampled_from(["extra", "Operation", ""])
_body_form = st.sampled_from(["ascii", "utf8"])
_bad_body_form = st.sampled_from(["dup-key", "bom", "trailing", "deep", "garbage"])
_route = (
    st.sampled_from([WRONG_CLASS, WRONG_CLASS, WRONG_TEMPLATE, STRAIGHT])
    | st.sampled_from(["spew_post.read", "spew_post.write", "beds.read", "nobody.read"])
    | st.sampled_from(["*.read", "#", "spew_post", ".read", "spew_post.read.x", ""])
    | st.builds(RawStr, st.sampled_from([b"spew_post\xff.write", b"\xff.read"]))
)
_reply = st.sampled_from(
    [REFUSES, REFUSES, DELETED, NEVER, VANISHED, VANISHED, STALE_DIRECT, SELF, NO_REPLY]
)
_correlation = st.sampled_from([None, ""]) | short_text
_properties = st.fixed_dictionaries(
    {},
    optional={
        "content_encoding": short_text,
        "message_type": short_text,
        "app_id": short_text,
        "priority": st.integers(0, 255),
        "delivery_mode": st.sampled_from([1, 2]),
        "timestamp": st.datetimes(
            min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1)
        )
        | st.just(FarTime(2000, 1, 1)),
        "expiration": st.sampled_from(["0", "1", "5", "60000", "86400000"]),
    },
)
_garbage = st.binary(max_size=64) | st.sampled_from([b"", b"[]", b"{", b"\xff"])
_forged_key = st.none() | st.sampled_from(["spew_post.write", "spew_post.read", "beds.read"])
_class = st.sampled_from(["read", "write", "meta"])
_message_id = st.sampled_from(["trace", None]) | short_text
_content_type = (
    st.sampled_from(
        [
            None,
            "",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=latin-1",
            "text/plain",
        ]
    )
    | short_text
)
_USUAL_PAYLOAD: Final = {"create": "record", "update": "key", "delete": "key", "fetch": "query"}


@st.composite
def hostile_messages(draw: st.DrawFn) -> Hostile:
    """Mostly sound messages with one or a few hostile parts (each part hostile by chance)."""

    def chance(percent: int) -> bool:
        return draw(_percent) < percent

    usual = draw(_usual)
    operation = draw(_operation) if chance(5) else usual
    template = draw(_template) if chance(8) else ("beds" if usual == "ping" else "spew_post")
    payload = draw(_payload) if chance(6) else _USUAL_PAYLOAD.get(usual, "empty")
    top: dict[str, Any] = {}
    if chance(4):
        top["version"] = draw(_version)
    if chance(2):
        top[draw(_top_key)] = draw(json_scalar)
    body_form = draw(_bad_body_form) if chance(5) else draw(_body_form)
    reply = draw(_reply) if chance(30) else (READY_DIRECT if chance(50) else READY_QUEUE)
    headers = draw(forged_headers) if chance(8) else {}
    if len(encode.field_table(headers)) > 100_000:
        headers = {}  # a content header must fit one frame (128 KiB), or RabbitMQ closes ours
    return Hostile(
        operation=operation,
        template=template,
        payload=payload,
        meta=draw(metas()),
        top=top,
        body_form=body_form,
        garbage=draw(_garbage) if body_form == "garbage" else b"",
        route=draw(_route) if chance(12) else EXACT,
        forged_key=draw(_forged_key),
        straight_to=draw(_class),
        reply=reply,
        correlation=draw(_correlation) if chance(8) else "trace",
        message_id=draw(_message_id) if chance(8) else "trace",
        content_type=draw(_content_type) if chance(6) else "application/json",
        properties=draw(_properties) if chance(12) else {},
        headers=headers,
    )


BATCH: Final = 1
"""Messages drawn per hypothesis example (its engine costs more per example than per draw)."""


def generate(count: int) -> list[Hostile]:
    """``count`` messages, the same ones every run (a fixed seed)."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=-(-count // BATCH),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(hostile_messages(), min_size=BATCH, max_size=BATCH))
    def collect(batch: list[Hostile]) -> None:
        drawn.extend(batch)

    collect()
    return drawn[:count]


# -- on the wire ----------------------------------------------------------------------------------


def _fill(value: Any, trace: str) -> Any:
    """``Marker`` placeholders → their values at send time."""
    if value is FUTURE:
        return time.time() + 300
    if value is PAST:
        return time.time() - 60
    if value is UNIQUE_KEY:
        return f"k-{trace}"
    return value


def meta_of(message: Hostile, trace: str, *, keyed: bool) -> Any:
    """The ``meta`` sent; ``keyed`` gives a write without a key one (its outcome is then kept
    by the key: callers that vanish)."""
    if not isinstance(message.meta, dict):
        return message.meta
    meta = {field: _fill(value, trace) for field, value in message.meta.items()}
    for field in ("causation_id", "origin", "parent_id"):  # the trace of a ping
        if field not in meta:
            meta[field] = trace
            break
    if keyed and meta.get("idempotency_key") is None:
        meta["idempotency_key"] = f"k-{trace}"
    return meta


def payload_of(kind: str, trace: str, author: str) -> Any:
    return {
        "record": {"author": author, "body": trace},
        "query": {"query": "by_author", "params": {"author": trace}, "limit": 5},
        "empty": {},
        "key": {"id": 10**12, "body": trace},
        "profile": {"handle": author, "display_name": trace},
        "junk": [trace],
    }[kind]


def to_body(message: Hostile, trace: str, author: str, *, keyed: bool = False) -> bytes:
    """The message's body (the trace is in it, wherever dead letters may show it)."""
    if message.body_form == "garbage":
        return message.garbage + trace.encode()
    envelope: dict[str, Any] = {
        "operation": message.operation,
        "template": message.template,
        "payload": payload_of(message.payload, trace, author),
    }
    meta = meta_of(message, trace, keyed=keyed)
    if meta != "absent":
        envelope["meta"] = meta
    envelope.update(message.top)
    if message.body_form == "deep":
        envelope["payload"] = {"trace": trace, "deep": [[[[]]]]}
        text = json.dumps(envelope).replace("[[[[]]]]", "[" * 2000 + "]" * 2000)
        return text.encode()
    ascii_only = message.body_form == "ascii"
    body = json.dumps(envelope, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if message.body_form == "dup-key":
        return b'{"operation": "ping", ' + body[1:]
    if message.body_form == "bom":
        return b"\xef\xbb\xbf" + body
    if message.body_form == "trailing":
        return body + b" x"
    return body


def routing_key(message: Hostile) -> str:
    """The routing key on the events exchange (``straight`` messages: unused)."""
    template = message.template if isinstance(message.template, str) else "x"
    operation = message.operation if isinstance(message.operation, str) else ""
    klass = CLASS.get(operation, "read")
    if template == "beds_lineage":
        klass = "admin"
    if message.route == EXACT:
        key = f"{template}.{klass}"
    elif message.route == WRONG_CLASS:
        key = f"{template}.{'read' if klass == 'write' else 'write'}"
    elif message.route == WRONG_TEMPLATE:
        key = f"{'spew_post' if template == 'spew_profile' else 'spew_profile'}.{klass}"
    else:
        key = message.route
    if isinstance(key, RawStr):
        return key
    try:
        if len(key.encode("utf-8")) <= 255:
            return key
    except UnicodeEncodeError:
        pass
    return "hostile.read"


def _words(key: str) -> list[bytes]:
    return key.encode("utf-8", "surrogateescape").split(b".")


def routable(message: Hostile) -> bool:
    """Whether RabbitMQ routes the message to a broker queue (bindings ``*.read``, ``*.write``,
    ``*.meta``; a ``straight`` message goes to the queue it names)."""
    if message.route == STRAIGHT:
        return True
    words = _words(routing_key(message))
    return len(words) == 2 and words[1] in (b"read", b"write", b"meta")


# -- the oracle ------------------------------------------------------------------------------


@attrs.frozen
class Verdict:
    """What the node must do with one message (docs/wire-contract.md)."""

    routable: bool
    decodes: bool
    """The AMQP properties decode at all (else: dead-lettered, never answered)."""
    answerable: bool
    """``reply_to`` is present and usable (else: dead-lettered, never answered)."""
    codes: frozenset[str] | None
    """The codes the reply must have (the request is refused), or ``None``: any outcome."""
    serve: bool
    """The control group: a sound request that must succeed."""
    why: str
    """Why it is refused (for failure messages)."""


def _utf8(value: str) -> bytes | None:
    if isinstance(value, RawStr):
        try:
            value.raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return value.raw
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        return None


def printable_short(value: Any) -> bool:
    """A short string the node may read or echo: UTF-8, at most 255 bytes, printable."""
    raw = _utf8(value) if isinstance(value, str) else None
    return raw is not None and len(raw) <= 255 and raw.decode("utf-8").isprintable()


def _meta_text_ok(value: Any) -> bool:
    return type(value) is str and printable_short(value)


def _has_bad_json(value: Any) -> bool:
    """Lone surrogates or non-finite numbers anywhere: JSON the node cannot read."""
    if isinstance(value, str):
        return _utf8(value) is None
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return any(_has_bad_json(item) for item in value)
    if isinstance(value, dict):
        return any(_has_bad_json(key) or _has_bad_json(item) for key, item in value.items())
    return False


def meta_problem(meta: Any) -> str | None:
    """Why ``meta`` is refused, or ``None``."""
    if meta == "absent":
        return None
    if not isinstance(meta, dict):
        return "meta is not an object"
    for field, value in meta.items():
        if field not in META_FIELDS:
            return f"unknown meta field {field!r}"
        if value in (FUTURE, PAST, UNIQUE_KEY):
            continue
        if field in META_TEXT and not _meta_text_ok(value):
            return f"meta.{field}"
        if field == "principal" and value is not None and not _meta_text_ok(value):
            return "meta.principal"
        if field == "depth" and not (type(value) is int and 0 <= value <= 64):
            return "meta.depth"
        if field == "deadline" and value is not None:
            number = type(value) in (int, float) and not _has_bad_json(value)
            if not (number and 0 < float(value) < 1e11):
                return "meta.deadline"
        if field == "idempotency_key" and value is not None:
            ok = (
                type(value) is str
                and 0 < len(value) <= 200
                and printable_short(value)
                and value.strip() == value
            )
            if not ok:
                return "meta.idempotency_key"
    return None


def _content_type_ok(value: Any) -> bool | None:
    """The contract's rule; ``None`` for ``""`` (the contract does not say)."""
    if value is None:
        return True
    if value == "":
        return None
    if not printable_short(value):
        return False
    media, *params = (part.strip().lower() for part in value.split(";"))
    charset = all(
        param.replace(" ", "") in ("charset=utf-8", 'charset="utf-8"') for param in params
    )
    return media == "application/json" and charset


def _header_tables_decode(value: Any) -> bool:
    """Table keys must be UTF-8 (a value that is not comes through as bytes)."""
    if isinstance(value, dict):
        return all(
            _utf8(key) is not None and _header_tables_decode(item) for key, item in value.items()
        )
    if isinstance(value, list):
        return all(_header_tables_decode(item) for item in value)
    return True


def _header_value(value: Any) -> Any:
    """What the node reads for a header value: invalid UTF-8 text comes through as bytes."""
    if isinstance(value, RawStr) and _utf8(value) is None:
        return value.raw
    return value


def _headers_problem(headers: dict[str, Any]) -> str | None:
    deliveries = _header_value(headers.get("x-beds-deliveries"))
    if deliveries is not None and not (type(deliveries) is int and deliveries > 0):
        return "x-beds-deliveries"
    key = _header_value(headers.get("x-beds-routing-key"))
    if key is not None and not (type(key) is str and len(key.encode()) <= 255):
        return "x-beds-routing-key"
    return None


def judge(message: Hostile, *, correlation: Any, message_id: Any) -> Verdict:
    """What the node must do with ``message`` sent with these AMQP ids (after the trace)."""
    is_routable = routable(message)
    headers = message.headers
    if message.route == STRAIGHT and message.forged_key is not None:
        headers = {**headers, "x-beds-routing-key": message.forged_key}
    decodes = _header_tables_decode(headers) and not isinstance(
        message.properties.get("timestamp"), FarTime
    )
    answerable = decodes and message.reply != NO_REPLY

    def refused(codes: set[str], why: str) -> Verdict:
        return Verdict(is_routable, decodes, answerable, frozenset(codes), False, why)

    if not decodes:
        return refused({"BEDS-400"}, "properties do not decode")
    if message.reply == NO_REPLY:
        return refused({"BEDS-400"}, "no reply_to")
    for name, value in (
        ("correlation_id", correlation),
        ("message_id", message_id),
        ("content_type", message.content_type),
        ("expiration", message.properties.get("expiration")),
    ):
        if value not in (None, "") and not printable_short(value):
            return refused({"BEDS-400"}, f"property {name}")
    problem = _headers_problem(headers)
    if problem:
        return refused({"BEDS-400"}, f"header {problem}")
    content_type = _content_type_ok(message.content_type)
    if content_type is False:
        return refused({"BEDS-400"}, "content type")
    if message.body_form in ("bom", "trailing", "garbage"):
        return refused({"BEDS-400"}, f"body {message.body_form}")
    if message.body_form == "deep":
        return refused({"BEDS-400", "BEDS-422"}, "body nested 2000 deep")
    problem = _envelope_problem(message)
    if problem:
        return refused({"BEDS-400"}, problem)
    if not _route_ok(message):
        return refused({"BEDS-400", "BEDS-405"}, f"route {message.route!r}")
    sound = (
        content_type is True
        and message.body_form in ("ascii", "utf8")
        and not message.top
        and not headers
        and "expiration" not in message.properties
        and message.reply in OBSERVED
        and _sound_meta(message.meta)
        and (
            (message.operation, message.template, message.payload)
            in (("create", "spew_post", "record"), ("fetch", "spew_post", "query"))
            or (message.operation, message.template, message.payload) == ("ping", "beds", "empty")
        )
    )
    return Verdict(is_routable, decodes, answerable, None, sound, "")


def _envelope_problem(message: Hostile) -> str | None:
    version = message.top.get("version", 1)
    if not (type(version) is int and version == 1):
        return "version"
    if any(key != "version" for key in message.top):
        return "unknown top-level key"
    if message.operation not in OPERATIONS:
        return "operation"
    if not (isinstance(message.template, str) and TEMPLATE_NAME.fullmatch(message.template)):
        return "template"
    if message.payload == "junk":
        return "payload is not an object"
    problem = meta_problem(message.meta)
    if problem:
        return problem
    if _has_bad_json(message.meta) or _has_bad_json(message.template):
        return "lone surrogate or non-finite number"
    return None


def _route_ok(message: Hostile) -> bool:
    """The key the node reads is the body's own and one the receiving queue is bound to."""
    klass = "admin" if message.template == "beds_lineage" else CLASS[message.operation]
    expected = f"{message.template}.{klass}"
    if message.route == STRAIGHT:
        return message.forged_key == expected and message.straight_to == klass
    return routing_key(message) == expected


def _sound_meta(meta: Any) -> bool:
    if meta == "absent":
        return True
    return (
        isinstance(meta, dict)
        and meta.get("principal") is None
        and meta.get("deadline") in (None, FUTURE)
        and meta.get("idempotency_key") in (None, UNIQUE_KEY)
    )
