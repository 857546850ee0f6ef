"""Idempotent writes on MariaDB: the key, the write and its result commit in one transaction.

The objects are beds-rel's own (``sql/000_beds_idempotency.sql``, applied by ``beds schema
apply``); like every other object the adapter uses, they are called by name. Because the claim
and the write share a transaction, a node that dies half-way leaves nothing behind (MariaDB rolls
back when the connection drops), and a redelivered request finds either no key (it runs) or the
committed result (it is answered from it): exactly once, not just at most once.

A write that is one call (:class:`CallWrite`) costs two round trips: ``beds_idempotency_start``
and the write procedure in one packet, then ``beds_idempotency_complete``. When another request
holds the key, start SIGNALs ``45410`` (:data:`KEY_HELD`) and MariaDB skips the write; the holder's
row is then read with ``beds_idempotency_claim``, as every other write (a journaled one, a batch)
claims its key: in a round trip of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from beds.idempotency import encode_outcomes, encode_result, repeat_outcome, repeat_outcomes
from beds.namaste import SchemaFile
from beds_rel.bindings import Call
from beds_rel.errors import is_clean
from beds_rel.statements import LeadSignalled

if TYPE_CHECKING:
    from asyncmy.connection import Connection

    from beds.errors import RequestError
    from beds.namaste import CallContext, Record
    from beds_rel.statements import Row

__all__ = (
    "CALLS",
    "KEY_HELD",
    "PURGE",
    "CallWrite",
    "RunCall",
    "batch_once",
    "schema_file",
    "write_once",
)

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
START = Call(
    kind="procedure",
    name="beds_idempotency_start",
    sql="CALL `beds_idempotency_start`(%s, %s, %s)",
    params=("key", "fingerprint", "ttl_ms"),
    arity=3,
)
KEY_HELD = "45410"
"""The SQLSTATE ``beds_idempotency_start`` signals when another request holds the key."""
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
CALLS = (CLAIM, START, COMPLETE, PURGE)
"""Every object idempotent writes need, for ``verify``."""

_SCHEMA = "000_beds_idempotency.sql"


def schema_file() -> SchemaFile:
    """The DBA file that creates the idempotency table and procedures."""
    text = resources.files("beds_rel").joinpath("sql", _SCHEMA).read_text(encoding="utf-8")
    return SchemaFile(name=f"beds_rel/sql/{_SCHEMA}", text=text, distribution="beds-rel")


class CallWrite:
    """A write that is one call of ``call`` on ``conn``, as :func:`write_once`'s body.

    ``result_of`` turns the call's rows into the operation's result (raising ``NotFound``…).
    Keyed, the claim of the key travels in the call's packet.
    """

    __slots__ = ("args", "call", "conn", "result_of")

    def __init__(
        self,
        conn: Connection,
        call: Call,
        args: Sequence[Any],
        result_of: Callable[[Rows], Record],
    ) -> None:
        self.conn, self.call, self.args, self.result_of = conn, call, args, result_of

    async def __call__(self, run: RunCall) -> Record:
        """Run the call with ``run`` and return its result."""
        return self.result_of(await run(self.conn, self.call, self.args))


_LED: dict[int, tuple[Call, Call]] = {}
"""Each write call with ``beds_idempotency_start`` as its lead, by the write call's ``id``."""


def _led(call: Call) -> Call:
    cached = _LED.get(id(call))
    if cached is None or cached[0] is not call:  # the call is kept: its id is not reused
        cached = (call, attrs.evolve(call, lead=START.sql, lead_arity=START.arity or 0))
        _LED[id(call)] = cached
    return cached[1]


async def write_once(
    conn: Connection,
    run: RunCall,
    ctx: CallContext,
    body: Callable[[RunCall], Awaitable[Record]],
) -> Record:
    """Run ``body`` at most once for ``ctx.idempotency_key``, in one transaction on ``conn``.

    Claim (which starts the transaction), ``body`` (the write, and a journaled template's
    entry), complete (which commits): the key, the write and its result commit together. A
    :class:`CallWrite` body's call carries the claim in its packet (one round trip fewer).

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
    if isinstance(body, CallWrite):
        try:
            return await _once_in_packet(conn, run, ctx, body)
        except _Held:
            pass  # nothing ran and no transaction is open: read the holder's row
    return await _once(conn, run, ctx, body, encode_result, repeat_outcome)


async def batch_once(
    conn: Connection,
    run: RunCall,
    ctx: CallContext,
    body: Callable[[RunCall], Awaitable[list[Record | RequestError]]],
) -> list[Record | RequestError]:
    """:func:`write_once` for a whole batch: its per-item outcomes are the key's result."""
    return await _once(conn, run, ctx, body, encode_outcomes, repeat_outcomes)


class _Held(Exception):
    """``beds_idempotency_start`` found the key held; it ended its transaction."""


def _claim_args(ctx: CallContext) -> tuple[Any, ...]:
    return (ctx.idempotency_key, ctx.fingerprint, max(1, round(ctx.idempotency_ttl * 1000)))


async def _once_in_packet(
    conn: Connection, run: RunCall, ctx: CallContext, body: CallWrite
) -> Record:
    try:
        try:
            rows: Rows = await run(conn, _led(body.call), (*_claim_args(ctx), *body.args))
        except LeadSignalled as signal:
            if signal.sqlstate == KEY_HELD:
                raise _Held from None  # the start rolled back: no transaction to end
            raise signal.__cause__ or signal from None  # another refusal of the claim: as alone
        result = body.result_of(rows)
        await run(conn, COMPLETE, (ctx.idempotency_key, encode_result(result).decode()))
        return result
    except _Held:
        raise
    except BaseException as exc:
        # After a cancelled or broken exchange the connection is dropped instead, and MariaDB
        # rolls the transaction back when it goes.
        if is_clean(exc):
            await conn.rollback()
        raise


async def _once(
    conn: Connection,
    run: RunCall,
    ctx: CallContext,
    body: Callable[[RunCall], Awaitable[_T]],
    encode: Callable[[_T], bytes],
    repeat: Callable[[CallContext, str, Any], _T],
) -> _T:
    try:
        # The claim opens the transaction (and ends it when the key is taken); complete commits.
        held: Row = (await run(conn, CLAIM, _claim_args(ctx)))[0]
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
