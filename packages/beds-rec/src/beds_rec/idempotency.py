"""Idempotent writes on MongoDB without transactions: a leased claim, and writes that show.

A standalone server has no multi-document transactions, so the key's record cannot commit with
the write. Two things make it safe anyway (docs/architecture.md, "Idempotent writes"):

* **A leased claim.** The first attempt inserts ``{_id: key}`` in ``beds_idempotency`` (the
  unique ``_id`` makes one claim win) with its ``attempt`` token and a lease: ``lease_until`` =
  now + ``ctx.idempotency_lease`` (``handler_budget + settle_grace``: the broker stops every
  handler by then). After the write it records the result on the claim. A repeat that finds a
  result gets it (``repeat_outcome``); one that finds a claim without a result whose lease is
  live gets ``WriteInDoubt`` with the seconds left (the first attempt is genuinely running); the
  same handling's own retry takes its claim back at once.
* **Writes whose effect can be seen.** A claim whose lease lapsed without a result belongs to an
  attempt that is gone (its node died, or its store went away between the write and the
  record). A repeat takes it over (one winner) and *recovers*: a create stores the key in the
  created document (``_beds_key``) under a unique sparse index on the template's collection,
  in the same ``insert_one``, so the repeat finds the document if the write applied (and its
  answer is built from it) or inserts it now, and two inserts with one key are impossible. An
  update (``$set`` of the sent values) and a delete (by key) are idempotent in their effect, so
  recovery runs them again; a delete that then finds nothing answers ``{"deleted": 1}``, the
  outcome the first attempt had (the claim survives only a write that was not refused).

A write that fails before it reached the server, or that the server refused, releases its claim,
so a repeat runs it; one whose outcome is unknown (connection lost mid-call) shortens its lease
to now, so the next repeat recovers at once. Keys expire after ``ctx.idempotency_ttl`` (TTL
index ``beds_idempotency_ttl``); a create's key also lives in its document, as long as it does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError

from beds.errors import RequestError, WriteInDoubt
from beds.idempotency import encode_result, repeat_outcome
from beds.namaste import SchemaFile
from beds_rec.errors import database_call
from beds_rec.values import utc_now

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from pymongo.asynchronous.collection import AsyncCollection

    from beds.namaste import CallContext, Record

__all__ = (
    "COLLECTION",
    "KEY_FIELD",
    "KEY_INDEX",
    "TTL_INDEX",
    "AlreadyApplied",
    "KeyStore",
    "Recover",
    "schema_file",
)

COLLECTION: Final = "beds_idempotency"
TTL_INDEX: Final = "beds_idempotency_ttl"
KEY_FIELD: Final = "_beds_key"
"""The field of a created document that holds the idempotency key it was created with."""
KEY_INDEX: Final = "beds_idempotency_key_uq"
"""The unique sparse index on ``_beds_key`` in every collection a keyed create writes to."""
_SCHEMA: Final = "000_beds_idempotency.json"

Recover = Callable[[], "Awaitable[Record | None]"]
"""Tells whether a lost attempt's write applied: its result, or ``None`` (run it again)."""


class AlreadyApplied(Exception):
    """A keyed insert met its own key in ``_beds_key``: an earlier attempt applied it."""


def schema_file() -> SchemaFile:
    """The schema file that creates the idempotency collection and its TTL index."""
    text = resources.files("beds_rec").joinpath("schema_files", _SCHEMA).read_text("utf-8")
    return SchemaFile(name=f"beds_rec/schema_files/{_SCHEMA}", text=text, distribution="beds-rec")


def _not_applied(exc: BaseException) -> bool:
    """Whether a failed write certainly changed nothing, so its claim may be released."""
    if isinstance(exc, RequestError):
        cause = exc.__cause__
        # The server refused it (validation, duplicate key…), or it never left the client.
        return not exc.TRANSIENT or isinstance(cause, ServerSelectionTimeoutError)
    return False


class KeyStore:
    """The idempotency keys of one database."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def once(
        self,
        ctx: CallContext,
        write: Callable[[], Awaitable[Record]],
        recover: Recover,
    ) -> Record:
        """Run ``write`` at most once for ``ctx.idempotency_key``; see the module docstring.

        Raises:
            IdempotencyKeyReused: the key belongs to another request.
            WriteInDoubt: the key's first attempt holds a live lease and has no result yet.
        """
        held, taken_over = await self._claim(ctx)
        if held is not None:
            return repeat_outcome(ctx, str(held["fingerprint"]), held.get("result"))
        try:
            result = await self._run(write, recover, taken_over=taken_over)
        except BaseException as exc:
            await self._after_failure(ctx, exc)
            raise
        expires = utc_now() + dt.timedelta(seconds=ctx.idempotency_ttl)
        with database_call(collection=COLLECTION, deadline=None):
            await self.collection.update_one(
                {"_id": ctx.idempotency_key, "attempt": ctx.attempt},
                {"$set": {"result": encode_result(result).decode(), "expires_at": expires}},
            )
        return result

    @staticmethod
    async def _run(
        write: Callable[[], Awaitable[Record]], recover: Recover, *, taken_over: bool
    ) -> Record:
        if taken_over:
            recovered = await recover()
            if recovered is not None:
                return recovered
        try:
            return await write()
        except AlreadyApplied:
            recovered = await recover()  # another attempt inserted it just now
            if recovered is None:  # pragma: no cover - the unique index says it exists
                raise
            return recovered

    async def _after_failure(self, ctx: CallContext, exc: BaseException) -> None:
        """Release a claim whose write changed nothing; else let the next repeat recover now."""
        mine = {"_id": ctx.idempotency_key, "attempt": ctx.attempt, "result": None}
        with contextlib.suppress(PyMongoError):  # if this fails too, the lease lapses by itself
            if _not_applied(exc):
                await self.collection.delete_one(mine)
            else:
                await self.collection.update_one(mine, {"$set": {"lease_until": utc_now()}})

    async def _claim(self, ctx: CallContext) -> tuple[dict[str, Any] | None, bool]:
        """Claim the key, or return the claim that answers this repeat.

        Returns:
            ``(None, taken_over)`` when this attempt holds the key now (``taken_over``: from a
            lost attempt, so its write may have applied), else ``(claim, False)``.

        Raises:
            WriteInDoubt: another attempt holds the key with a live lease.
        """
        now = utc_now()
        claim = {
            "fingerprint": ctx.fingerprint,
            "result": None,
            "attempt": ctx.attempt,
            "lease_until": now + dt.timedelta(seconds=ctx.idempotency_lease),
            "expires_at": now + dt.timedelta(seconds=ctx.idempotency_ttl),
        }
        key = ctx.idempotency_key
        with database_call(collection=COLLECTION, deadline=ctx.deadline):
            try:
                await self.collection.insert_one({"_id": key, **claim})
                return None, False
            except DuplicateKeyError:
                pass
            held = await self.collection.find_one({"_id": key})
            if held is None:  # expired and deleted between the two calls: claim afresh
                return await self._claim(ctx)
            if held.get("result") is not None or held.get("fingerprint") != ctx.fingerprint:
                return held, False  # answered from it, or refused as another request's key
            if held["expires_at"] <= now:  # forgotten: a new first attempt
                lapsed: dict[str, Any] = {"expires_at": held["expires_at"]}
            elif held.get("attempt") == ctx.attempt:  # this handling's own earlier try
                lapsed = {"attempt": ctx.attempt}
            elif held.get("lease_until", held["expires_at"]) <= now:
                lapsed = {"lease_until": held.get("lease_until")}
            else:
                left = (held.get("lease_until", held["expires_at"]) - now).total_seconds()
                raise WriteInDoubt(
                    "the first write with this idempotency key is still running; it is not "
                    "run twice",
                    details=(f"ask again in {max(1, round(left))} s",),
                )
            taken = await self.collection.find_one_and_update(
                {"_id": key, "result": None, **lapsed},
                {"$set": claim},
                return_document=ReturnDocument.AFTER,
            )
        if taken is None:  # another repeat took it over first, or it got its result
            return await self._claim(ctx)
        return None, "expires_at" not in lapsed
