"""Idempotent writes on MongoDB without transactions: a leased claim, and writes that show.

A standalone server has no multi-document transactions, so the key's record cannot commit with
the write. Two things make it safe anyway (docs/architecture.md, "Idempotent writes"):

* **A leased claim.** The first attempt inserts ``{_id: key}`` in ``beds_idempotency`` (the
  unique ``_id`` makes one claim win) with its ``attempt`` token and a lease: ``lease_until`` =
  now + ``ctx.idempotency_lease`` (``handler_budget + settle_grace``: the broker stops every
  handler by then). After the write it records the result on the claim. A repeat that finds a
  result gets it (``repeat_outcome``); one that finds a claim without a result whose lease is
  live gets ``WriteInDoubt`` with the seconds left (the first attempt may still be running);
  the same handling's own retry takes its claim back at once.
* **Writes whose effect can be seen.** A claim whose lease lapsed without a result belongs to an
  attempt that is gone (its node died, or its store went away between the write and the
  record). A repeat takes it over (one winner: the update is conditioned on the old attempt and
  lease) and *recovers*, finding out whether the lost attempt's write applied:

  - a create stores ``key#fingerprint`` in the created document (``_beds_key``, see
    :func:`key_value`) under a unique sparse index on the template's collection, in the same
    ``insert_one``: the repeat finds the document if the write applied (and builds its answer
    from it) or inserts it now; two inserts of one keyed request are impossible, whatever the
    interleaving, even with an attempt that outlived its lease;
  - a delete first pins the ``_id`` of the document it deletes on its claim (``target``), then
    deletes that document: recovery deletes the pinned document again, and answers
    ``{"deleted": 1}`` when it is gone already (the lost attempt deleted it). A document created
    later with the same key is never touched; a claim without a pin means the delete never ran;
  - an update (``$set`` of the sent values) is idempotent in its effect: recovery runs it again;
  - except a locked one (optimistic locking): run again, it would meet its own version bump
    and answer ``StaleVersion``. So a keyed locked update pushes its ``key#fingerprint`` onto
    the document's ``_beds_updates`` (the last :data:`UPDATES_KEPT`) in the same
    ``update_one`` that bumps the version; recovery finds the document holding it and answers
    from it, and runs the update only when no document does (then a stale version is stale).

A batch (:meth:`KeyStore.once_batch`, :mod:`beds_rec.batch`) is one keyed write: its result is
the encoded list of its items' outcomes, and each item marks or pins as its single write does,
its ``key_value`` followed by ``/<index>``.

A keyed create records its result in the same command as its document (and its journal
entry): an ordered ``bulkWrite`` (MongoDB 8.0) inserts the document, then the entry, then sets the
result on the claim (:meth:`Claim.completion`), each only if the one before it applied. Its result
is known before it is sent (the client makes the ``_id``; ``created_at`` is the node's clock), and
an ordered bulk stops at the first failure, so the result is never recorded for a document that
is not there; a failure after the insert leaves the claim without a result, as a separate
completion would. Servers without ``bulkWrite`` get the separate ``update_one``.

A write that never reached the server, that the server refused, or that matched nothing releases
its claim, so a repeat runs it. One whose outcome is unknown (connection lost or timed out
mid-call, write concern failed, task cancelled), or that failed while recovering a lost attempt's
write, keeps its claim and shortens its lease to now, so the next repeat recovers at once. Keys
expire after ``ctx.idempotency_ttl`` (TTL index ``beds_idempotency_ttl``); an expired key is a
new key. Leases compare the clocks of the nodes involved: they must agree to well within a lease.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import pymongo
from pymongo import ReturnDocument
from pymongo.errors import (
    DuplicateKeyError,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)

from beds.errors import RequestError, WriteInDoubt
from beds.idempotency import encode_outcomes, encode_result, repeat_outcome, repeat_outcomes
from beds.namaste import SchemaFile
from beds_rec.errors import database_call
from beds_rec.values import utc_now

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

    from beds.namaste import CallContext, Record

__all__ = (
    "COLLECTION",
    "KEY_FIELD",
    "KEY_INDEX",
    "TTL_INDEX",
    "UPDATES_FIELD",
    "UPDATES_KEPT",
    "AlreadyApplied",
    "BatchWrite",
    "Claim",
    "KeyStore",
    "Pin",
    "Recover",
    "Write",
    "allow_key_field",
    "forbids_key_field",
    "key_value",
    "schema_file",
)

COLLECTION: Final = "beds_idempotency"
TTL_INDEX: Final = "beds_idempotency_ttl"
KEY_FIELD: Final = "_beds_key"
"""The field of a created document that holds the key (and fingerprint) it was created with."""
KEY_INDEX: Final = "beds_idempotency_key_uq"
"""The unique sparse index on ``_beds_key`` in every collection a keyed create writes to."""
UPDATES_FIELD: Final = "_beds_updates"
"""The field of a locked template's document listing its last keyed updates' ``key_value``."""
UPDATES_KEPT: Final = 8
"""Keyed updates a document remembers: a lost update is recognised unless this many other
keyed updates of the same record land before its repeat (within a lease, in practice never)."""
_SCHEMA: Final = "000_beds_idempotency.json"
_CLAIM_TRIES: Final = 5
"""Claim rounds before giving up (each lost round means another attempt changed the claim)."""
_CLEANUP_SECONDS: Final = 1.0
"""At most this long to release or shorten a claim after a failure (it lapses anyway)."""

Pin = Callable[[Any], "Awaitable[None]"]
"""Records on the claim, before the write, what the write is about to change (a delete's
``_id``), so that recovery changes that and nothing else. Raises ``WriteInDoubt`` when another
attempt took the key over meanwhile: the write must not run."""
Write = Callable[["Claim | None"], "Awaitable[Record]"]
"""Runs the write and returns its result; given the :class:`Claim` (a :data:`Pin`) when keyed."""
BatchWrite = Callable[[Pin | None], "Awaitable[list[Record | RequestError]]"]
"""Runs a batch of writes and returns its per-item outcomes (``beds_rec.batch``)."""
Recover = Callable[[Any], "Awaitable[Record | None]"]
"""Tells whether a lost attempt's write applied, given what it pinned (or ``None``): the
write's result, or ``None`` when it did not apply (it is run now)."""


_T = TypeVar("_T")


class AlreadyApplied(Exception):
    """A keyed insert met its own ``_beds_key``: an earlier attempt applied it."""


@attrs.frozen
class _Claimed:
    """What claiming a key gave this attempt."""

    held: Mapping[str, Any] | None = None
    """Another request's claim, or one with a result: the repeat is answered from it."""
    taken_over: bool = False
    """This attempt holds a claim a lost attempt left: its write may have applied."""
    pinned: Any = None
    """What the lost attempt pinned, if it did."""


class Claim:
    """This attempt's claim, as a keyed write sees it: call it to pin (a :data:`Pin`).

    A write that can set the result in the command that writes (a create's ``bulkWrite``) takes
    :meth:`completion` into that command and, once the command succeeded whole, sets
    :attr:`completed`: the key store then sends no completion of its own.
    """

    __slots__ = ("completed", "ctx", "encode", "store")

    def __init__(self, store: KeyStore, ctx: CallContext, encode: Callable[[Any], bytes]) -> None:
        self.store = store
        self.ctx = ctx
        self.encode = encode
        self.completed = False
        """Whether the write recorded its result on the claim (in its own command)."""

    async def __call__(self, target: Any) -> None:
        """Pin ``target`` on the claim (:data:`Pin`)."""
        await self.store._pin(self.ctx, target)

    def completion(self, result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The filter and update that record ``result`` on this attempt's claim."""
        return self.store._completion(self.ctx, self.encode(result))

    @property
    def namespace(self) -> str:
        """The claims' collection as ``database.collection`` (for a client-level bulk)."""
        return self.store.collection.full_name


def key_value(ctx: CallContext) -> str:
    """The ``_beds_key`` of a document created by this keyed request: ``key#fingerprint``.

    The fingerprint part (64 bits) makes the value name the request, not just the key: after the
    key expired, a resend of the same create still finds its document, while another create
    that reuses the key is a new request and runs.
    """
    return f"{ctx.idempotency_key}#{ctx.fingerprint[:16]}"


def schema_file() -> SchemaFile:
    """The schema file that creates the idempotency collection and its TTL index."""
    text = resources.files("beds_rec").joinpath("schema_files", _SCHEMA).read_text("utf-8")
    return SchemaFile(name=f"beds_rec/schema_files/{_SCHEMA}", text=text, distribution="beds-rec")


def forbids_key_field(validator: Mapping[str, Any] | None, field: str = KEY_FIELD) -> bool:
    """Whether a collection validator rejects documents that carry ``field`` (``_beds_key``).

    Only a ``$jsonSchema`` that restricts ``additionalProperties`` and does not declare the
    field does; query-operator validators constrain named fields only.
    """
    schema = (validator or {}).get("$jsonSchema")
    if not isinstance(schema, Mapping):
        return False
    extra = schema.get("additionalProperties", True)
    return extra is not True and field not in (schema.get("properties") or {})


_MARKER_TYPES: Final = {KEY_FIELD: "string", UPDATES_FIELD: "array"}


def allow_key_field(
    validator: Mapping[str, Any] | None, fields: tuple[str, ...] = (KEY_FIELD,)
) -> Mapping[str, Any] | None:
    """The validator, declaring each of ``fields`` (``_beds_key``: a string) it would reject."""
    if validator is None:
        return validator
    refused = [field for field in fields if forbids_key_field(validator, field)]
    if not refused:
        return validator
    schema = dict(validator["$jsonSchema"])
    declared = {field: {"bsonType": _MARKER_TYPES[field]} for field in refused}
    schema["properties"] = {**(schema.get("properties") or {}), **declared}
    return {**validator, "$jsonSchema": schema}


def _not_applied(exc: BaseException) -> bool:
    """Whether a failed write certainly changed nothing, so its claim may be released."""
    if not isinstance(exc, RequestError):
        return False  # cancelled mid-call, or a bug: unknown
    cause = exc.__cause__
    if isinstance(cause, ServerSelectionTimeoutError):
        return True  # no server was found: nothing was sent
    if isinstance(cause, WriteConcernError):
        return False  # applied, just not acknowledged as asked
    if isinstance(cause, PyMongoError) and cause.timeout:
        return False  # sent, and no answer in time (the deadline, or the server): unknown
    # The server refused it (validation, duplicate key), it matched nothing (NotFound), or it
    # was never sent (deadline passed before the call); a lost connection is transient.
    return not exc.TRANSIENT


class KeyStore:
    """The idempotency keys of one database."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def once(self, ctx: CallContext, write: Write, recover: Recover) -> Record:
        """Run ``write`` at most once for ``ctx.idempotency_key``; see the module docstring.

        Raises:
            IdempotencyKeyReused: the key belongs to another request.
            WriteInDoubt: another attempt holds the key with a live lease and has no result yet.
        """
        return await self._once(ctx, write, recover, encode_result, repeat_outcome)

    async def once_batch(
        self,
        ctx: CallContext,
        write: BatchWrite,
        recover: Callable[[Any], Awaitable[list[Record | RequestError] | None]],
    ) -> list[Record | RequestError]:
        """:meth:`once` for a batch: the key's result is the encoded per-item list.

        Raises:
            IdempotencyKeyReused: the key belongs to another request.
            WriteInDoubt: another attempt holds the key with a live lease and has no result yet.
        """
        return await self._once(ctx, write, recover, encode_outcomes, repeat_outcomes)

    async def _once(
        self,
        ctx: CallContext,
        write: Callable[[Claim | None], Awaitable[_T]],
        recover: Callable[[Any], Awaitable[_T | None]],
        encode: Callable[[_T], bytes],
        repeat: Callable[[CallContext, str, Any], _T],
    ) -> _T:
        if not ctx.attempt:  # a caller that does not tell its handlings apart: each call is one
            ctx = attrs.evolve(ctx, attempt=os.urandom(12).hex())
        claimed = await self._claim(ctx)
        if claimed.held is not None:
            held = claimed.held
            return repeat(ctx, str(held["fingerprint"]), held.get("result"))
        # After a takeover, until recovery tells, the lost attempt's write may have applied:
        # a failure then keeps the claim (and what the lost attempt pinned on it).
        recovering = claimed.taken_over
        claim = Claim(self, ctx, encode)
        try:
            result = await recover(claimed.pinned) if claimed.taken_over else None
            recovering = False
            if result is None:
                result = await self._write(claim, write, recover)
        except BaseException as exc:
            await self._after_failure(ctx, release=not recovering and _not_applied(exc))
            raise
        if claim.completed:  # recorded in the write's own command
            return result
        try:
            with database_call(collection=COLLECTION, deadline=None):
                await self.collection.update_one(*self._completion(ctx, encode(result)))
        except BaseException:
            # Applied but not recorded: the next attempt may recover it at once.
            await self._after_failure(ctx, release=False)
            raise
        return result

    async def _write(
        self,
        claim: Claim,
        write: Callable[[Claim | None], Awaitable[_T]],
        recover: Callable[[Any], Awaitable[_T | None]],
    ) -> _T:
        try:
            return await write(claim)
        except AlreadyApplied:
            recovered = await recover(None)  # another attempt inserted it just now
            if recovered is None:  # pragma: no cover - the unique index says it exists
                raise
            return recovered

    @staticmethod
    def _completion(ctx: CallContext, result: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """The filter and update that record ``result`` on this attempt's claim."""
        expires = utc_now() + dt.timedelta(seconds=ctx.idempotency_ttl)
        return (
            {"_id": ctx.idempotency_key, "attempt": ctx.attempt},
            {"$set": {"result": result.decode(), "expires_at": expires}},
        )

    async def _pin(self, ctx: CallContext, target: Any) -> None:
        with database_call(collection=COLLECTION, deadline=ctx.deadline):
            pinned = await self.collection.update_one(
                {"_id": ctx.idempotency_key, "attempt": ctx.attempt, "result": None},
                {"$set": {"target": target}},
            )
        if pinned.matched_count == 0:
            raise WriteInDoubt(
                "another attempt took this write's idempotency key over; it is not run twice",
                details=("ask again to get the outcome",),
            )

    async def _after_failure(self, ctx: CallContext, *, release: bool) -> None:
        """Release a claim whose write changed nothing; else let the next repeat recover now."""
        mine = {"_id": ctx.idempotency_key, "attempt": ctx.attempt, "result": None}
        # Best effort and brief: if this fails too, the lease lapses by itself.
        with contextlib.suppress(PyMongoError), pymongo.timeout(_CLEANUP_SECONDS):
            if release:
                await self.collection.delete_one(mine)
            else:
                await self.collection.update_one(mine, {"$set": {"lease_until": utc_now()}})

    async def _claim(self, ctx: CallContext) -> _Claimed:
        """Claim the key, or return the claim that answers this repeat.

        Raises:
            WriteInDoubt: another attempt holds the key with a live lease.
        """
        key = ctx.idempotency_key
        with database_call(collection=COLLECTION, deadline=ctx.deadline):
            for _ in range(_CLAIM_TRIES):
                now = utc_now()
                claim = {
                    "fingerprint": ctx.fingerprint,
                    "result": None,
                    "attempt": ctx.attempt,
                    "lease_until": now + dt.timedelta(seconds=ctx.idempotency_lease),
                    "expires_at": now + dt.timedelta(seconds=ctx.idempotency_ttl),
                }
                try:
                    await self.collection.insert_one({"_id": key, **claim})
                    return _Claimed()
                except DuplicateKeyError:
                    pass
                held = await self.collection.find_one({"_id": key})
                if held is None:  # expired and deleted between the two calls: claim afresh
                    continue
                if held["expires_at"] <= now:  # forgotten: this is a new first attempt
                    fresh = await self.collection.find_one_and_replace(
                        {"_id": key, "expires_at": held["expires_at"]}, claim
                    )
                    if fresh is not None:
                        return _Claimed()
                    continue
                if held.get("result") is not None or held.get("fingerprint") != ctx.fingerprint:
                    return _Claimed(held=held)  # answered from it, or refused as another's key
                owner = held.get("attempt")
                if owner != ctx.attempt:  # the same handling's own earlier try is taken back
                    # A claim without a lease (left by an earlier version) is in doubt until
                    # it expires: nothing tells how long its attempt may run.
                    lease_until = held.get("lease_until") or held["expires_at"]
                    if lease_until > now:
                        left = (lease_until - now).total_seconds()
                        raise WriteInDoubt(
                            "the first write with this idempotency key may still be running; "
                            "it is not run twice",
                            details=(f"ask again in {max(1, math.ceil(left))} s",),
                        )
                lapsed = {"attempt": owner, "lease_until": held.get("lease_until")}
                taken = await self.collection.find_one_and_update(
                    {"_id": key, "result": None, **lapsed},
                    {"$set": claim},
                    return_document=ReturnDocument.AFTER,
                )
                if taken is not None:
                    return _Claimed(taken_over=True, pinned=taken.get("target"))
        # Other attempts kept changing the claim (each round, one of them won it).
        raise WriteInDoubt(
            "other attempts hold this idempotency key; the write is not run twice",
            details=(f"ask again in {max(1, round(ctx.idempotency_lease))} s",),
        )
