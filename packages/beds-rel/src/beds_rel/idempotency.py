"""Idempotent writes on MariaDB: the key, the write and its result commit in one transaction.

The objects are beds-rel's own (``sql/000_beds_idempotency.sql``, applied by ``beds schema
apply``); like every other object the adapter uses, they are called by name. Because the claim
and the write share a transaction, a node that dies half-way leaves nothing behind (MariaDB rolls
back when the connection drops), and a redelivered request finds either no key (it runs) or the
committed result (it is answered from it): exactly once, not just at most once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from beds.idempotency import encode_outcomes, encode_result, repeat_outcome, repeat_outcomes
from beds.namaste import SchemaFile
from beds_rel.bindings import Call
from beds_rel.errors import is_clean

if TYPE_CHECKING:
    from asyncmy.connection import Connection

    from beds.errors import RequestError
    from beds.namaste import CallContext, Record

__all__ = ("CALLS", "PURGE", "RunCall", "batch_once", "schema_file", "write_once")

Rows = list[dict[str, Any]]
_T = TypeVar("_T")
RunCall = Callable[["Connection", Call, Sequence[Any]], Awaitable[Rows]]

CLAIM = Call(
    kind="procedure",
    name="beds_idempotency_claim",
    sql="CALL `beds_idempotency_claim`(%s, %s, %s)",
    params=("key", "fingerprint", "ttl_ms"),
    arity=3,
)
COMPLETE = Call(
    kind="procedure",
    name="beds_idempotency_complete",
    sql="CALL `beds_idempotency_complete`(%s, %s)",
    params=("key", "result"),
    arity=2,
)
PURGE = Call(
    kind="procedure",
    name="beds_idempotency_purge",
    sql="CALL `beds_idempotency_purge`(%s)",
    params=("limit",),
    arity=1,
)
CALLS = (CLAIM, COMPLETE, PURGE)
"""Every object idempotent writes need, for ``verify``."""

_SCHEMA = "000_beds_idempotency.sql"


def schema_file() -> SchemaFile:
    """The DBA file that creates the idempotency table and procedures."""
    text = resources.files("beds_rel").joinpath("sql", _SCHEMA).read_text(encoding="utf-8")
    return SchemaFile(name=f"beds_rel/sql/{_SCHEMA}", text=text, distribution="beds-rel")


async def write_once(
    conn: Connection,
    run: RunCall,
    ctx: CallContext,
    body: Callable[[RunCall], Awaitable[Record]],
) -> Record:
    """Run ``body`` at most once for ``ctx.idempotency_key``, in one transaction on ``conn``.

    Claim (which starts the transaction), ``body`` (the write, and a journaled template's
    entry), complete (which commits): the key, the write and its result commit together.

    Args:
        conn: a connection of the pool, in autocommit mode; left with no transaction open.
        run: runs one call on a connection and returns its first result set.
        ctx: the request's key, fingerprint and TTL.
        body: runs the write on ``conn`` with the ``run`` it is given, and returns the
            operation's result; what it raises (``NotFound``, ``StaleVersion``…) rolls the
            write back.

    Raises:
        IdempotencyKeyReused: the key belongs to another request.
        WriteInDoubt: the key is claimed without a result (a write procedure that commits).
    """
    return await _once(conn, run, ctx, body, encode_result, repeat_outcome)


async def batch_once(
    conn: Connection,
    run: RunCall,
    ctx: CallContext,
    body: Callable[[RunCall], Awaitable[list[Record | RequestError]]],
) -> list[Record | RequestError]:
    """:func:`write_once` for a whole batch: its per-item outcomes are the key's result."""
    return await _once(conn, run, ctx, body, encode_outcomes, repeat_outcomes)


async def _once(
    conn: Connection,
    run: RunCall,
    ctx: CallContext,
    body: Callable[[RunCall], Awaitable[_T]],
    encode: Callable[[_T], bytes],
    repeat: Callable[[CallContext, str, Any], _T],
) -> _T:
    ttl_ms = max(1, round(ctx.idempotency_ttl * 1000))
    try:
        # The claim opens the transaction (and ends it when the key is taken); complete commits.
        held = (await run(conn, CLAIM, (ctx.idempotency_key, ctx.fingerprint, ttl_ms)))[0]
        if held["claimed"]:
            result = await body(run)
            await run(conn, COMPLETE, (ctx.idempotency_key, encode(result).decode()))
            return result
    except BaseException as exc:
        # After a cancelled or broken exchange the connection is dropped instead, and MariaDB
        # rolls the transaction back when it goes.
        if is_clean(exc):
            await conn.rollback()
        raise
    return repeat(ctx, held["fingerprint"], held["result"])
