"""The one wire codec: envelopes ↔ JSON bytes (cattrs + orjson), with size limits.

Every undecodable input becomes a :class:`~beds.errors.RequestError` with a catalogue code and
deterministic details; no other exception leaves :func:`decode_request`.

Why this module is long: the converter, the error details it produces and the hand-built usual
request (the decoder's fast path) must agree field by field, so they stay side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter
from cattrs.v import format_exception

from beds.envelopes import (
    EnvelopeLimitError,
    ErrorBody,
    Operation,
    Request,
    RequestMeta,
    Response,
    ResponseMeta,
    text_problem,
)
from beds.errors import MalformedRequest, PayloadTooLarge
from beds.values import json_type

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = (
    "CONTENT_TYPE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "converter",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "make_wire_converter",
)

CONTENT_TYPE: Final = "application/json"
DEFAULT_MAX_MESSAGE_BYTES: Final = 1024 * 1024

_T = TypeVar("_T")


class _WireTypeError(TypeError):
    """A JSON value of the wrong type for an envelope field; the message is the detail."""


# These hooks are dispatched on subclasses too (a StrEnum such as Operation is a str), so the
# checked JSON value is passed on to ``kind`` whenever ``kind`` is not the builtin itself.


def _structure_str(value: object, kind: Any) -> Any:
    if type(value) is not str:
        raise _WireTypeError(f"must be a string, got {json_type(value)}")
    return value if kind is str else kind(value)


def _structure_int(value: object, kind: Any) -> Any:
    if type(value) is not int:
        raise _WireTypeError(f"must be an integer, got {json_type(value)}")
    return value if kind is int else kind(value)


def _structure_float(value: object, kind: Any) -> Any:
    if type(value) is not float and type(value) is not int:
        raise _WireTypeError(f"must be a number, got {json_type(value)}")
    return float(value) if kind is float else kind(value)


def _structure_bool(value: object, _: object) -> bool:
    if type(value) is not bool:
        raise _WireTypeError(f"must be true or false, got {json_type(value)}")
    return value


def _is_literal(kind: Any) -> bool:
    return get_origin(kind) is Literal


def _structure_literal(value: object, kind: Any) -> object:
    allowed = get_args(kind)
    for choice in allowed:
        if type(value) is type(choice) and value == choice:
            return choice
    choices = " or ".join(orjson.dumps(choice).decode() for choice in allowed)
    raise _WireTypeError(f"must be {choices}")


def make_wire_converter() -> cattrs.Converter:
    """Build the converter used on the wire: extra keys are errors, details are collected.

    JSON scalars are structured strictly: a string is never read as a number, a number never as
    text, and only ``true``/``false`` are booleans (cattrs would otherwise call ``str()``,
    ``int()`` or ``bool()`` on whatever arrived).
    """
    wire = make_converter(forbid_extra_keys=True, detailed_validation=True)
    wire.register_structure_hook(str, _structure_str)
    wire.register_structure_hook(int, _structure_int)
    wire.register_structure_hook(float, _structure_float)
    wire.register_structure_hook(bool, _structure_bool)
    wire.register_structure_hook_func(_is_literal, _structure_literal)
    # A JSON string is iterable: without this, "abc" would become ("a", "b", "c").
    structure_strings = wire.get_structure_hook(tuple[str, ...])

    def _structure_string_tuple(value: object, kind: Any) -> tuple[str, ...]:
        if type(value) is not list:
            raise _WireTypeError(f"must be an array, got {json_type(value)}")
        result: tuple[str, ...] = structure_strings(value, kind)
        return result

    wire.register_structure_hook_func(lambda kind: kind == tuple[str, ...], _structure_string_tuple)
    # Reply meta grows within v1 (docs/wire-contract.md, "Compatibility"): optional keys are
    # left out when they say nothing, and a client reads a newer node's reply, ignoring keys it
    # does not know.
    wire.register_unstructure_hook(
        ResponseMeta,
        make_dict_unstructure_fn(
            ResponseMeta,
            wire,
            next=override(omit_if_default=True),
            cached=override(omit_if_default=True),
        ),
    )
    wire.register_structure_hook(
        ResponseMeta, make_dict_structure_fn(ResponseMeta, wire, _cattrs_forbid_extra_keys=False)
    )
    return wire


converter: Final = make_wire_converter()


_MAX_NAMED_KEYS: Final = 10
"""Unknown keys named in one detail; the others are counted."""
_MAX_KEY_CHARS: Final = 64
"""Characters of an unknown key repeated in a detail."""


def _key_name(key: str) -> str:
    """An unknown key as a detail shows it: as sent when short and printable, else escaped."""
    if len(key) <= _MAX_KEY_CHARS and key.isprintable():
        return key
    shown = ascii(key[:_MAX_KEY_CHARS])[1:-1]
    return f"{shown}… ({len(key)} characters)" if len(key) > _MAX_KEY_CHARS else shown


def _extra_keys(exc: cattrs.ForbiddenExtraKeysError) -> str:
    """Like cattrs's message, with keys bounded and escaped: they are the sender's text."""
    keys = sorted(exc.extra_fields)
    names = [_key_name(key) for key in keys[:_MAX_NAMED_KEYS]]
    if len(keys) > _MAX_NAMED_KEYS:
        names.append(f"and {len(keys) - _MAX_NAMED_KEYS} more")
    return f"extra fields found ({', '.join(names)})"


def _format_error(exc: BaseException, kind: type | None) -> str:
    if isinstance(exc, _WireTypeError):
        return str(exc)
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return _extra_keys(exc)
    if isinstance(exc, ValueError) and kind is None:
        return str(exc)  # an envelope validator's own message (for example the depth range)
    if isinstance(exc, AttributeError):
        return "must be an object"  # a nested envelope (meta, error) that is not a JSON object
    return format_exception(exc, kind)


def _messages(exc: BaseException, path: str, kind: type | None = None) -> Iterator[str]:
    """``message @ path`` for every error under ``exc``.

    This is :func:`cattrs.transform_error`'s walk, except that an :class:`EnvelopeLimitError`
    names each field it holds (``$.meta.event_id``, not the ``$.meta`` whose constructor raised
    it).
    """
    if isinstance(exc, EnvelopeLimitError):
        for field, rule in exc.problems:
            yield f"must {rule} @ {path}.{field}"
    elif isinstance(exc, cattrs.IterableValidationError):
        indexed, plain = exc.group_exceptions()
        for inner, item in indexed:
            yield from _messages(inner, f"{path}[{item.index!r}]", item.type)
        for inner in plain:
            yield from _messages(inner, path)
    elif isinstance(exc, cattrs.ClassValidationError):
        named, plain = exc.group_exceptions()
        for inner, attribute in named:
            yield from _messages(inner, f"{path}.{attribute.name}", attribute.type)
        for inner in plain:
            yield from _messages(inner, path)
    else:
        yield f"{_format_error(exc, kind)} @ {path}"


def _details(exc: Exception) -> tuple[str, ...]:
    if isinstance(exc, cattrs.BaseValidationError):
        return tuple(sorted(_messages(exc, "$")))
    return (str(exc),)


def _content_type_ok(content_type: str | None) -> bool:
    """Accept ``application/json`` (any case), optionally with ``charset=utf-8``; or none."""
    if not content_type or content_type == CONTENT_TYPE:  # what every client sends
        return True
    media, *params = (part.strip().lower() for part in content_type.split(";"))
    if media != CONTENT_TYPE:
        return False
    return all(param.replace(" ", "") in ("charset=utf-8", 'charset="utf-8"') for param in params)


_AS_SENT: Final = object()
"""``decode_request(principal=..., origin=...)`` default: keep the field as the body says."""


def _valid_as_sent(name: str, meta: dict[str, Any]) -> bool:
    """Whether ``meta``'s ``name`` is absent or a value the envelope allows there."""
    if name not in meta:
        return True
    sent = meta[name]
    if sent is None:
        return name == "principal"  # the one vouched-for field that may be null
    return isinstance(sent, str) and text_problem(sent) is None


def _with_vouched(raw: dict[str, Any], vouched: dict[str, object]) -> dict[str, Any]:
    """``raw`` with ``meta``'s vouched-for fields replaced by what the node knows of them.

    Replaced only where the envelope is otherwise valid: a malformed meta, principal or origin
    is still refused (BEDS-400), as the wire contract says.
    """
    meta = raw.get("meta", _AS_SENT)
    if isinstance(meta, dict):
        if all(_valid_as_sent(name, meta) for name in vouched):
            return {**raw, "meta": {**meta, **vouched}}
    elif meta is _AS_SENT:
        given = {name: value for name, value in vouched.items() if value is not None}
        if given:
            return {**raw, "meta": given}
    return raw


_OPERATIONS: Final = {operation.value: operation for operation in Operation}
_REQUEST_KEYS: Final = frozenset(("version", "operation", "template", "payload", "meta"))
_META_KEYS: Final = frozenset(attrs.fields_dict(RequestMeta))
_TEXT: Final = (str, type(None))
_NUMBER: Final = (float, int, type(None))


def _usual_request(raw: dict[str, Any]) -> Request | None:
    """The request every client sends, built without cattrs (a third of the decode's cost).

    Only a request whose every key and JSON type is what the envelope declares is built here,
    and it is built through the same constructors, so their limits apply; anything else
    (``None``) goes through the converter, which explains what is wrong. Either way the result
    is the same :class:`Request` (``tests/test_codec.py`` checks it with hypothesis).
    """
    if not raw.keys() <= _REQUEST_KEYS:
        return None
    get = raw.get
    name = get("operation")
    operation = _OPERATIONS.get(name) if type(name) is str else None
    template, payload, meta = get("template"), get("payload", {}), get("meta", {})
    version = get("version", 1)
    if (
        operation is None
        or type(version) is not int
        or version != 1
        or type(template) is not str
        or type(payload) is not dict
        or type(meta) is not dict
        or not meta.keys() <= _META_KEYS
    ):
        return None
    field = meta.get
    text = _TEXT
    deadline = field("deadline")
    if (
        type(field("event_id", "")) is not str
        or type(field("parent_id", "")) is not str
        or type(field("correlation_id", "")) is not str
        or type(field("causation_id", "")) is not str
        or type(field("origin", "")) is not str
        or type(field("depth", 0)) is not int
        or type(field("idempotency_key")) not in text
        or type(field("principal")) not in text
        or type(deadline) not in _NUMBER
    ):
        return None
    if type(deadline) is int:
        meta = {**meta, "deadline": float(deadline)}
    try:
        return Request(
            operation=operation,
            template=template,
            payload=payload,
            meta=RequestMeta(**meta),
        )
    except ValueError:  # a limit: the converter names the field
        return None


_RESPONSE_KEYS: Final = frozenset(("version", "ok", "status", "data", "error", "meta"))
_ERROR_KEYS: Final = frozenset(("code", "message", "details"))


def _usual_response(raw: dict[str, Any]) -> Response | None:
    """The reply every node sends, built without cattrs; ``None`` goes through the converter.

    The client's side of :func:`_usual_request`, checked the same way.
    """
    if not raw.keys() <= _RESPONSE_KEYS:
        return None
    get = raw.get
    version, ok, status = get("version", 1), get("ok"), get("status")
    error, meta = get("error"), get("meta", {})
    if (
        type(version) is not int
        or version != 1
        or type(ok) is not bool
        or type(status) is not int
        or type(meta) is not dict
    ):
        return None
    field = meta.get
    timings = field("timings", {})
    if (
        type(field("event_id", "")) is not str
        or type(field("node", "")) is not str
        or type(field("next")) not in _TEXT
        or type(field("cached", False)) is not bool
        or type(timings) is not dict
        or any(type(value) is not float for value in timings.values())
    ):
        return None
    body = None
    if error is not None:
        if type(error) is not dict or not error.keys() <= _ERROR_KEYS:
            return None
        code, message, details = error.get("code"), error.get("message"), error.get("details", [])
        if (
            type(code) is not str
            or type(message) is not str
            or type(details) is not list
            or any(type(detail) is not str for detail in details)
        ):
            return None
        body = ErrorBody(code=code, message=message, details=tuple(details))
    return Response(
        ok=ok,
        status=status,
        data=get("data"),
        error=body,
        meta=ResponseMeta(
            event_id=field("event_id", ""),
            node=field("node", ""),
            timings=timings,
            next=field("next"),
            cached=field("cached", False),
        ),
    )


def _decode(
    kind: type[_T],
    body: bytes,
    content_type: str | None,
    max_bytes: int,
    principal: object = _AS_SENT,
    origin: object = _AS_SENT,
) -> _T:
    if len(body) > max_bytes:
        raise PayloadTooLarge(
            "message body is larger than the limit",
            details=(f"limit is {max_bytes} bytes, body has {len(body)}",),
        )
    if not _content_type_ok(content_type):
        raise MalformedRequest(
            "unsupported content type", details=(f"expected {CONTENT_TYPE}, got {content_type}",)
        )
    try:
        raw: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest("message body is not valid JSON", details=(str(exc),)) from exc
    if not isinstance(raw, dict):
        raise MalformedRequest(
            "message body must be a JSON object", details=(f"got {json_type(raw)}",)
        )
    vouched = {
        name: value
        for name, value in (("principal", principal), ("origin", origin))
        if value is not _AS_SENT
    }
    if vouched:
        raw = _with_vouched(raw, vouched)
    usual = _usual_request(raw) if kind is Request else _usual_response(raw)
    if usual is not None:
        return usual  # type: ignore[return-value]
    try:
        return converter.structure(raw, kind)
    except Exception as exc:  # cattrs raises many kinds; all mean "wrong envelope shape"
        raise MalformedRequest(
            f"message body is not a valid {kind.__name__} envelope", details=_details(exc)
        ) from exc


def decode_request(
    body: bytes,
    content_type: str | None = CONTENT_TYPE,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    principal: str | object | None = _AS_SENT,
    origin: str | object = _AS_SENT,
) -> Request:
    """Decode a request body.

    ``principal``, when given, replaces whatever the body says in ``meta.principal`` (the
    dispatcher passes the authenticated principal's id, or ``None``), and ``origin`` what it
    says in ``meta.origin`` (the AMQP user RabbitMQ vouched for): set while the envelope is
    built, so the request is never built twice.

    Raises:
        PayloadTooLarge: the body is over ``max_bytes``.
        MalformedRequest: anything else that is not a valid v1 request envelope.
    """
    return _decode(Request, body, content_type, max_bytes, principal, origin)


def decode_response(
    body: bytes,
    content_type: str | None = CONTENT_TYPE,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Response:
    """Decode a response body (client side); same errors as :func:`decode_request`."""
    return _decode(Response, body, content_type, max_bytes)


def encode_request(request: Request) -> bytes:
    """Encode a request envelope."""
    return orjson.dumps(converter.unstructure(request))


def _as_is(value: object) -> object:
    return value


_response_shell: Final = make_dict_unstructure_fn(
    Response, converter, data=override(unstruct_hook=_as_is)
)
"""A response unstructured with ``data`` left as it is: orjson writes JSON data itself, without
cattrs walking every value (a batch's 500 results, a page of records)."""


def encode_response(response: Response) -> bytes:
    """Encode a response envelope. Data must already be JSON-safe (see :mod:`beds.values`).

    Plain data (dicts, lists, strings, numbers, datetimes) is written by orjson directly; data
    orjson cannot write (attrs instances, decimals) is unstructured by the wire converter first.
    """
    try:
        return orjson.dumps(_response_shell(response))
    except TypeError:
        return orjson.dumps(converter.unstructure(response))
