"""The load generator's batch targets: many records in one message, and the REL batch ceiling.

``python -m benchmarks.batch_load SPEC_JSON`` is ``python -m benchmarks.load`` (same spec, same
runs, same output) with two more targets. One call is one message of ``params["records"]``
records (or keys), so the number in flight is messages in flight; the spec's ``per_call``
(``{"unit": "records", "n": 500}``) makes each run report ``records_per_s``.

- ``beds_batch``: a logged-in :class:`beds.client.BedsClient` (publisher confirms, as always),
  ``params``: ``url``, ``operation`` and ``records``:

  - ``rel_create_many``: ``create_many("spew_post", ...)``, posts like ``rel_create``'s;
  - ``rel_fetch_many``: ``fetch_many("spew_post", ...)``, distinct ids drawn from the seed posts
    (so ``records`` is at most ``SEED_POSTS``); each result must be the post of its key;
  - ``rec_create_many``: ``create_many("spew_profile", ...)``, fresh handles (``spew_profile``
    is audited: one audit record per profile).

  ``keyed`` (default true): each message carries its own idempotency key, as ``BedsClient``
  gives every single write by default. Every item's result must be ``ok``: one failed item
  fails the call (an error of the run, with the item's error as the sample).
- ``store_batch``: the database ceilings of the REL batches, with no BEDS and no broker, on an
  asyncmy pool of ``pool`` connections (2), ``params``: ``mysql_url``, ``records`` and
  ``operation`` (scenarios ``db_rel_create_many`` and ``db_rel_fetch_many``):

  - ``rel_create_many`` (the default): ``CALL spp_create_many`` with a JSON array of
    ``records`` posts, checking that the procedure answered one row per post;
  - ``rel_fetch_many``: one ``SELECT ... FROM spp_posts_v WHERE id IN (...)`` of ``records``
    distinct seed post ids (what the REL adapter sends for ``fetch_many`` by id), checking that
    every post came back.

See ``docs/benchmarks.md``, "Batched records".
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any, Final

import orjson

from benchmarks import load
from benchmarks.load import CALL_TIMEOUT, BadReply, Call
from benchmarks.work import BIO_TEXT, POST_COLUMNS, POST_TEXT, SEED_POSTS, mysql_kwargs

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from beds.client import BatchResult

OPERATIONS: Final = ("rel_create_many", "rel_fetch_many", "rec_create_many")
BATCH_PROCEDURE: Final = "spp_create_many"
"""The example domain's REL batch procedure (``spew_post``'s ``batch_procedure``): one JSON
array of posts in, one row per post out."""


def _post() -> dict[str, Any]:
    """A post as ``rel_create`` sends it (no parent)."""
    return {"author": "bench_author", "body": POST_TEXT}


def _profile() -> dict[str, Any]:
    """A profile with a fresh handle (``b`` and 24 hex digits, as ``rec_create``'s)."""
    return {"handle": "b" + os.urandom(12).hex(), "display_name": "Bench User", "bio": BIO_TEXT}


def check_results(results: list[BatchResult], sent: int) -> None:
    """Every item answered, in order, and ok; else :class:`BadReply` with the first failure."""
    if len(results) != sent:
        raise BadReply(f"{len(results)} results for {sent} items")
    for result in results:
        if not result.ok:
            error = result.error
            what = f"{error.code} {error.message}" if error is not None else "no error body"
            raise BadReply(f"item {result.index}: {result.status} {what}"[:300])


async def beds_batch_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    """The ``beds_batch`` target: one call sends one message of ``params["records"]`` items."""
    from beds.client import BedsClient
    from beds.testing import TestIdentity

    operation, size = params["operation"], int(params["records"])
    if operation not in OPERATIONS:
        raise ValueError(f"no batch operation {operation!r}: one of {', '.join(OPERATIONS)}")
    if not 1 <= size <= (SEED_POSTS if operation == "rel_fetch_many" else 10_000):
        raise ValueError(f"{size} records a message is out of range for {operation}")
    keyed = bool(params.get("keyed", True))
    # An admin member, as the single-record scenarios' client (posts may name any author).
    token = TestIdentity.development("bench").token("bench", ("member", "admin"))
    client = BedsClient(
        params["url"], origin="bench", env="bench", timeout=CALL_TIMEOUT, token=token
    )
    await client.connect()
    stack.push_async_callback(client.close)
    # One message a call: a chunk is the whole call, and nothing else is outstanding in it.
    options: dict[str, Any] = {"chunk": size, "in_flight": 1}
    rng = random.Random(1)
    posts = [_post() for _ in range(size)]  # the same content each time, as rel_create's

    def key() -> str | None:
        return f"bench.{os.urandom(16).hex()}" if keyed else None

    async def create_posts() -> None:
        results = await client.create_many("spew_post", posts, idempotency_key=key(), **options)
        check_results(results, size)

    async def fetch_posts() -> None:
        ids = rng.sample(range(1, SEED_POSTS + 1), size)
        keys = [{"id": n} for n in ids]
        results = await client.fetch_many("spew_post", keys, **options)
        check_results(results, size)
        for result, wanted in zip(results, ids, strict=True):
            if not isinstance(result.data, dict) or result.data.get("id") != wanted:
                raise BadReply(f"item {result.index}: not post {wanted}: {result.data!r}"[:300])

    async def create_profiles() -> None:
        profiles = [_profile() for _ in range(size)]
        results = await client.create_many(
            "spew_profile", profiles, idempotency_key=key(), **options
        )
        check_results(results, size)

    calls = {
        "rel_create_many": create_posts,
        "rel_fetch_many": fetch_posts,
        "rec_create_many": create_profiles,
    }
    return calls[operation]


async def store_batch_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    """The ``store_batch`` target: ``CALL spp_create_many(JSON)`` or one ``SELECT ... IN``
    through an asyncmy pool."""
    import asyncmy

    operation = params.get("operation", "rel_create_many")
    if operation not in ("rel_create_many", "rel_fetch_many"):
        raise ValueError(f"no store batch {operation!r}: rel_create_many or rel_fetch_many")
    size, connections = int(params["records"]), int(params.get("pool", 2))
    if operation == "rel_fetch_many" and not 1 <= size <= SEED_POSTS:
        raise ValueError(f"{size} keys a call is out of range (1 to {SEED_POSTS})")
    pool = await asyncmy.create_pool(
        minsize=connections, maxsize=connections, **mysql_kwargs(params["mysql_url"])
    )

    async def close() -> None:
        pool.close()
        await pool.wait_closed()

    stack.push_async_callback(close)
    if operation == "rel_fetch_many":
        return _fetch_call(pool, size)
    # The records as the REL adapter sends them: the create's params, in declared order.
    body = orjson.dumps([{**_post(), "parent_id": None} for _ in range(size)]).decode()
    statement = f"CALL `{BATCH_PROCEDURE}`(%s)"

    async def call() -> None:
        async with pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(statement, (body,))
            rows = await cursor.fetchall()
            while await cursor.nextset():
                pass
        if len(rows) != size:
            raise BadReply(f"{BATCH_PROCEDURE} answered {len(rows)} rows for {size} posts")

    return call


FETCH_MANY_SQL: Final = f"SELECT {POST_COLUMNS} FROM `spp_posts_v` WHERE `id` IN "
"""``spew_post``'s fetch (``benchmarks.work.REL_FETCH_SQL``), by many ids."""


def _fetch_call(pool: Any, size: int) -> Call:
    """One ``SELECT ... WHERE id IN (...)`` of ``size`` distinct seed post ids a call."""
    rng = random.Random(1)
    statement = FETCH_MANY_SQL + "(" + ", ".join(["%s"] * size) + ")"

    async def call() -> None:
        ids = rng.sample(range(1, SEED_POSTS + 1), size)
        async with pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(statement, ids)
            rows = await cursor.fetchall()
        found = {row[0] for row in rows}
        if len(rows) != size or found != set(ids):
            raise BadReply(f"{len(rows)} rows ({len(found & set(ids))} asked) for {size} ids")

    return call


def main() -> None:
    load.TARGETS["beds_batch"] = beds_batch_target
    load.TARGETS["store_batch"] = store_batch_target
    load.main()


if __name__ == "__main__":
    main()
