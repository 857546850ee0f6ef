"""What every idempotent-writes adapter shares: the request fingerprint and the repeat rules.

A write with ``meta.idempotency_key`` runs at most once per key (docs/architecture.md,
"Idempotent writes"). The adapter keeps, per key, the first request's fingerprint and, once the
write committed, its result (JSON); :func:`repeat_outcome` turns what it kept into the answer
for a repeat, so every store answers repeats alike.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import orjson

from beds.errors import IdempotencyKeyReused, WriteInDoubt

if TYPE_CHECKING:
    from beds.envelopes import Request
    from beds.namaste import CallContext, Record

__all__ = ("encode_result", "fingerprint", "repeat_outcome")


def fingerprint(request: Request) -> str:
    """A digest of what a write asks for: its template, operation and payload (key order aside)."""
    what = orjson.dumps(
        [request.template, request.operation.value, request.payload],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(what).hexdigest()


def encode_result(result: Record) -> bytes:
    """The stored form of a write's result (it is JSON-safe: adapters return wire values)."""
    return orjson.dumps(result)


def repeat_outcome(ctx: CallContext, first_fingerprint: str, result: bytes | str | None) -> Record:
    """The answer to a repeat of ``ctx.idempotency_key``, from what the first call left.

    Args:
        ctx: the repeat's context (its key and fingerprint).
        first_fingerprint: the fingerprint stored with the key.
        result: the first call's stored result; ``None`` while it has no outcome.

    Raises:
        IdempotencyKeyReused: the key was first used for another request.
        WriteInDoubt: the first call is running or died before recording its outcome.
    """
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
    record: Record = orjson.loads(result)
    return record
