"""What every idempotent-writes adapter shares: the request fingerprint and the repeat rules.

A write with ``meta.idempotency_key`` runs at most once per key (docs/architecture.md,
"Idempotent writes"). The adapter keeps, per key, the first request's fingerprint and, once the
write committed, its result (JSON); :func:`repeat_outcome` turns what it kept into the answer
for a repeat, so every store answers repeats alike.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from typing import TYPE_CHECKING

import attrs
import orjson

from beds.envelopes import MAX_IDEMPOTENCY_KEY
from beds.errors import IdempotencyKeyReused, RequestError, WriteInDoubt

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from beds.envelopes import Request
    from beds.namaste import CallContext, Record

__all__ = (
    "decode_outcomes",
    "encode_outcomes",
    "encode_result",
    "fingerprint",
    "item_fingerprint",
    "item_key",
    "repeat_outcome",
    "repeat_outcomes",
    "watch_repeats",
)

_repeated: contextvars.ContextVar[bool] = contextvars.ContextVar("beds_repeated", default=False)


@contextlib.contextmanager
def watch_repeats() -> Iterator[Callable[[], bool]]:
    """Tell whether the writes run inside the block were answered as repeats of their key.

    Inside ``with watch_repeats() as repeated:``, ``repeated()`` is true once
    :func:`repeat_outcome` answered in this task: the write did not run again and changed
    nothing (so it gets no audit record).
    """
    token = _repeated.set(False)
    try:
        yield _repeated.get
    finally:
        _repeated.reset(token)


def fingerprint(request: Request) -> str:
    """A digest of what a write asks for: its template, operation and payload (key order aside).

    The authenticated principal is part of it: a key another caller used first (by accident,
    or guessed) is refused as reused, never answered with that caller's result.
    """
    what = orjson.dumps(
        [request.template, request.operation.value, request.payload, request.meta.principal],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(what).hexdigest()


def encode_result(result: Record) -> bytes:
    """The stored form of a write's result (it is JSON-safe: adapters return wire values)."""
    return orjson.dumps(result)


def encode_outcomes(outcomes: Sequence[Record | RequestError]) -> bytes:
    """The stored form of a batch's per-item outcomes (one JSON array, in request order).

    A record is kept as ``{"ok": true, "data": record}``, an error as ``{"ok": false,
    "status": 409, "error": {"code", "message", "details"}}`` (its ``to_error()``), so
    :func:`decode_outcomes` rebuilds the same exception class.
    """
    return orjson.dumps(
        [
            {
                "ok": False,
                "status": outcome.STATUS,
                "error": {
                    "code": outcome.CODE,
                    "message": outcome.message,
                    "details": list(outcome.details),
                },
            }
            if isinstance(outcome, RequestError)
            else {"ok": True, "data": outcome}
            for outcome in outcomes
        ]
    )


def decode_outcomes(stored: bytes | str) -> list[Record | RequestError]:
    """The outcomes :func:`encode_outcomes` stored: records, and errors of their own class."""
    from beds.envelopes import ErrorBody

    outcomes: list[Record | RequestError] = []
    for item in orjson.loads(stored):
        if item["ok"]:
            outcomes.append(item["data"])
        else:
            error = item["error"]
            outcomes.append(
                RequestError.from_error(
                    ErrorBody(
                        code=error["code"],
                        message=error["message"],
                        details=tuple(error["details"]),
                    )
                )
            )
    return outcomes


def repeat_outcomes(
    ctx: CallContext, first_fingerprint: str, result: bytes | str | None
) -> list[Record | RequestError]:
    """:func:`repeat_outcome` for a batch: the first call's per-item outcomes, decoded.

    Raises:
        IdempotencyKeyReused: the key was first used for another request.
        WriteInDoubt: the first call is running or died before recording its outcome.
    """
    _check_repeat(ctx, first_fingerprint, result)
    assert result is not None  # _check_repeat refuses a missing outcome
    outcomes = decode_outcomes(result)
    _repeated.set(True)
    return outcomes


def _check_repeat(ctx: CallContext, first_fingerprint: str, result: bytes | str | None) -> None:
    if first_fingerprint != ctx.fingerprint:
        raise IdempotencyKeyReused(
            "the idempotency key was first used for another request; this one is not executed",
            details=("use a new key for a new request",),
        )
    if result is None:
        raise WriteInDoubt(
            "the first write with this idempotency key has no outcome yet; it is not run again",
            details=("ask again later; the key is forgotten when it expires",),
        )


def repeat_outcome(ctx: CallContext, first_fingerprint: str, result: bytes | str | None) -> Record:
    """The answer to a repeat of ``ctx.idempotency_key``, from what the first call left.

    Call it in the task that runs the write (the dispatcher watches it: :func:`watch_repeats`).

    Args:
        ctx: the repeat's context (its key and fingerprint).
        first_fingerprint: the fingerprint stored with the key.
        result: the first call's stored result; ``None`` while it has no outcome.

    Raises:
        IdempotencyKeyReused: the key was first used for another request.
        WriteInDoubt: the first call is running or died before recording its outcome.
    """
    _check_repeat(ctx, first_fingerprint, result)
    assert result is not None  # _check_repeat refuses a missing outcome
    record: Record = orjson.loads(result)
    _repeated.set(True)
    return record


def item_key(key: str, index: int) -> str:
    """The idempotency key of a batch's item ``index`` when its store writes record by record.

    Each item then runs at most once on its own key, so a repeated batch is answered item by
    item from what each stored (and runs the items a lost attempt never reached). A key too long
    to take the suffix within ``MAX_IDEMPOTENCY_KEY`` is replaced by its digest.
    """
    suffix = f"#{index}"
    if len(key) + len(suffix) > MAX_IDEMPOTENCY_KEY:
        key = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key + suffix


def item_fingerprint(fingerprint: str, index: int) -> str:
    """The fingerprint of a batch's item ``index`` keyed on its own (:func:`item_key`)."""
    return hashlib.sha256(f"{fingerprint}/{index}".encode()).hexdigest()


def item_context(ctx: CallContext, index: int) -> CallContext:
    """The context of a batch's item ``index`` when its store writes record by record.

    Under a batch key, the item's own key and fingerprint (:func:`item_key`); for a journaled
    write, its own event id ``f"{ctx.event_id}/{index}"`` (a journal entry's event id is unique,
    as a store's own batch gives it).
    """
    mine = ctx
    if ctx.idempotency_key is not None:
        mine = attrs.evolve(
            mine,
            idempotency_key=item_key(ctx.idempotency_key, index),
            fingerprint=item_fingerprint(ctx.fingerprint, index),
        )
    if ctx.journal:
        mine = attrs.evolve(mine, event_id=f"{ctx.event_id}/{index}")
    return mine
