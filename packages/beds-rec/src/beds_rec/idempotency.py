"""Idempotent writes on MongoDB: claim the key, write, record the result (at most once).

Without multi-document transactions (a standalone server has none) the key cannot commit with
the write, so the adapter claims it first (``insert_one`` of ``{_id: key}``: the unique ``_id``
makes one claim win), writes, then records the result on the claim:

* a repeat that finds a result gets it (``repeat_outcome``);
* a repeat that finds a claim without a result gets ``WriteInDoubt``: the first call is running,
  or died between its write and the record of its result, and running the write again could
  double it. The key stays in doubt until it expires (``reliability.idempotency_ttl``);
* a write that fails before it reached the server, or that the server refused, releases its
  claim, so a repeat runs it.

The collection ``beds_idempotency`` is beds-rec's own (``schema_files/``); its TTL index lets
MongoDB delete expired keys, and the adapter also treats a key past ``expires_at`` as absent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from importlib import resources
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError

from beds.errors import RequestError
from beds.idempotency import encode_result, repeat_outcome
from beds.namaste import SchemaFile
from beds_rec.errors import database_call
from beds_rec.values import utc_now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pymongo.asynchronous.collection import AsyncCollection

    from beds.namaste import CallContext, Record

__all__ = ("COLLECTION", "TTL_INDEX", "KeyStore", "schema_file")

COLLECTION = "beds_idempotency"
TTL_INDEX = "beds_idempotency_ttl"
_SCHEMA = "000_beds_idempotency.json"


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

    async def once(self, ctx: CallContext, write: Callable[[], Awaitable[Record]]) -> Record:
        """Run ``write`` unless ``ctx.idempotency_key`` was claimed; see the module docstring.

        Raises:
            IdempotencyKeyReused: the key belongs to another request.
            WriteInDoubt: the key's first write has no recorded result.
        """
        key = ctx.idempotency_key
        held = await self._claim(ctx)
        if held is not None:
            return repeat_outcome(ctx, str(held["fingerprint"]), held.get("result"))
        try:
            result = await write()
        except BaseException as exc:
            if _not_applied(exc):
                with contextlib.suppress(PyMongoError):  # if this fails too, the key is in doubt
                    await self.collection.delete_one({"_id": key, "result": None})
            raise
        expires = utc_now() + dt.timedelta(seconds=ctx.idempotency_ttl)
        with database_call(collection=COLLECTION, deadline=None):
            await self.collection.update_one(
                {"_id": key},
                {"$set": {"result": encode_result(result).decode(), "expires_at": expires}},
            )
        return result

    async def _claim(self, ctx: CallContext) -> dict[str, Any] | None:
        """Claim the key (``None``) or return the claim that holds it."""
        now = utc_now()
        claim = {
            "fingerprint": ctx.fingerprint,
            "result": None,
            "expires_at": now + dt.timedelta(seconds=ctx.idempotency_ttl),
        }
        with database_call(collection=COLLECTION, deadline=ctx.deadline):
            try:
                await self.collection.insert_one({"_id": ctx.idempotency_key, **claim})
                return None
            except DuplicateKeyError:
                pass
            # Taken: an expired claim is ours to replace (one replacer wins); a live one answers.
            replaced = await self.collection.find_one_and_update(
                {"_id": ctx.idempotency_key, "expires_at": {"$lte": now}},
                {"$set": claim},
                return_document=ReturnDocument.AFTER,
            )
            if replaced is not None:
                return None
            held = await self.collection.find_one({"_id": ctx.idempotency_key})
        if held is None:  # expired and deleted between the two calls: claim afresh
            return await self._claim(ctx)
        return held
