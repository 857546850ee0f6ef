"""The load generator's read target: cached and uncached fetches, and pages by cursor.

``python -m benchmarks.read_load SPEC_JSON`` is ``python -m benchmarks.load`` (same spec, same
runs, same output) with one more target, ``beds_read``, whose ``params`` are ``url`` (the run's
AMQP URL) and ``read``, one of:

- ``rel_cached``, ``rel_uncached``: ``bench_post`` ``by_id`` over the seed posts, with
  ``"consistency": "cached"`` or ``"primary"``; ``rec_cached``, ``rec_uncached``: the same with
  ``spew_profile`` ``by_handle`` over the seed profiles. Before the runs, the cached side reads
  every key once, so the runs measure a warm cache; at the end it prints how many replies came
  from the cache (``meta.cached``) and fails when fewer than half did (a node without its
  control channel serves nothing from its cache). An uncached reply marked cached is an error.
- ``page``: the first page of ``spew_note``'s ``mine`` (the bench principal's notes, newest
  first), ``PAGE`` notes; ``mid_page``, ``deep_page``: the page after the first ``MID_AFTER``,
  ``DEEP_AFTER`` notes, with a cursor found by walking there once before the runs; ``walk``:
  every call fetches the next page of one of the walks in progress (the cursor from
  ``meta.next``), or starts a walk; ``plain``: ``bench_note``'s ``plain``, the same view and
  notes, unordered, with no cursor.

Every page is checked: its size, its ``meta.next``, and which notes it holds (a seeded note's
body starts with its rank, newest first), so a walk proves it saw every note once, in order.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import TYPE_CHECKING, Any, Final

from benchmarks import load
from benchmarks.load import CALL_TIMEOUT, BadReply, Call, wait_ready
from benchmarks.reads import DEEP_AFTER, MID_AFTER, NOTE_PREFIX, NOTES, PAGE, PRINCIPAL
from benchmarks.work import SEED_POSTS, SEED_PROFILES

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from beds.client import BedsClient
    from beds.envelopes import Response

CACHE_READS: Final = {
    "rel_cached": ("bench_post", "by_id", "cached"),
    "rel_uncached": ("bench_post", "by_id", "primary"),
    "rec_cached": ("spew_profile", "by_handle", "cached"),
    "rec_uncached": ("spew_profile", "by_handle", "primary"),
}
"""A cache read: template, query, consistency (the keys are the seed posts' or profiles')."""
PAGE_STARTS: Final = {"page": 0, "mid_page": MID_AFTER, "deep_page": DEEP_AFTER}
"""A page read: the notes before the page it reads again and again."""
PAGE_READS: Final = (*PAGE_STARTS, "walk", "plain")
MIN_CACHED_SHARE: Final = 0.5
"""Fewer replies from the cache than this share fail a cached scenario: the cache is off."""
READY_SECONDS: Final = 60.0


def _keys(template: str) -> list[dict[str, Any]]:
    """Every key the cache reads of ``template`` draw from (``benchmarks.work.make_args``)."""
    if template == "bench_post":
        return [{"id": n} for n in range(1, SEED_POSTS + 1)]
    return [{"handle": f"seed_{n}"} for n in range(SEED_PROFILES)]


async def _fetch(client: BedsClient, template: str, payload: dict[str, Any]) -> Response:
    """One fetch; a refused one raises :class:`BadReply` with its error."""
    response = await client.call(template, "fetch", payload)
    if not response.ok:
        raise BadReply(f"{template} fetch: {response.error}")
    return response


def _rank(record: dict[str, Any]) -> int:
    """A seeded note's rank, newest first, from its body (``Benchmark note 00042: …``)."""
    body = str(record.get("body", ""))
    if not body.startswith(NOTE_PREFIX):
        raise BadReply(f"not a seeded note of the run: {body[:40]!r}")
    return int(body[len(NOTE_PREFIX) :].split(":", 1)[0])


def _check_page(response: Response, first: int) -> list[dict[str, Any]]:
    """The records of a page that must hold notes ``first`` … in rank order (a full page unless
    it is the last, and then without ``meta.next``)."""
    records: list[dict[str, Any]] = response.data
    expected = min(PAGE, NOTES - first)
    if len(records) != expected:
        raise BadReply(f"a page from note {first} has {len(records)} notes, not {expected}")
    ranks = [_rank(record) for record in records]
    if ranks != list(range(first, first + expected)):
        raise BadReply(f"a page from note {first} holds notes {ranks[0]}…{ranks[-1]}")
    if (response.meta.next is None) != (first + expected == NOTES):
        raise BadReply(f"the page from note {first} has a wrong meta.next")
    return records


async def _page(client: BedsClient, cursor: str | None, first: int) -> Response:
    """The page of ``mine`` after ``cursor``, which must start at note ``first``."""
    payload: dict[str, Any] = {"query": "mine", "params": {"author": PRINCIPAL}, "limit": PAGE}
    if cursor is not None:
        payload["cursor"] = cursor
    response = await _fetch(client, "spew_note", payload)
    _check_page(response, first)
    return response


async def _cursor_after(client: BedsClient, notes: int) -> str | None:
    """The cursor of the page after the first ``notes`` notes (``None``: the first page), found
    by walking there."""
    cursor: str | None = None
    for first in range(0, notes, PAGE):
        async with asyncio.timeout(CALL_TIMEOUT):
            cursor = (await _page(client, cursor, first)).meta.next
    return cursor


async def _cache_call(
    stack: AsyncExitStack, client: BedsClient, read: str, rng: random.Random
) -> Call:
    template, query, consistency = CACHE_READS[read]
    keys = _keys(template)
    cached = consistency == "cached"
    counts = {"replies": 0, "cached": 0}

    async def call() -> None:
        payload = {"query": query, "params": rng.choice(keys), "consistency": consistency}
        response = await _fetch(client, template, payload)
        if len(response.data) != 1:
            raise BadReply(f"{template} {query} did not return one record")
        if response.meta.cached and not cached:
            raise BadReply("answered from the cache, with consistency primary")
        counts["replies"] += 1
        counts["cached"] += response.meta.cached

    await wait_ready(call, READY_SECONDS)
    if cached:
        # Fill the cache first: the runs measure it warm, not its first misses.
        fill = {"query": query, "consistency": "cached"}
        for start in range(0, len(keys), 100):
            batch = keys[start : start + 100]
            await asyncio.gather(*(_fetch(client, template, {**fill, "params": k}) for k in batch))
        counts.update(replies=0, cached=0)
        stack.callback(_check_cached, read, counts)
    return call


def _check_cached(read: str, counts: dict[str, int]) -> None:
    """Report the cached side's share of replies from the cache; too few fail the scenario."""
    replies, cached = counts["replies"], counts["cached"]
    print(f"    {read}: {cached:,} of {replies:,} replies from the node's cache", file=sys.stderr)
    if replies and cached < MIN_CACHED_SHARE * replies:
        raise SystemExit(
            f"{read}: only {cached:,} of {replies:,} replies came from the node's cache "
            "(is its control channel on?)"
        )


async def _page_call(client: BedsClient, read: str) -> Call:
    if read == "plain":

        async def plain() -> None:
            payload = {"query": "plain", "params": {"author": PRINCIPAL}, "limit": PAGE}
            response = await _fetch(client, "bench_note", payload)
            if len(response.data) != PAGE or response.meta.next is not None:
                raise BadReply(f"bench_note plain: {len(response.data)} notes, or a meta.next")

        await wait_ready(plain, READY_SECONDS)
        return plain

    async def first_page() -> None:
        await _page(client, None, 0)

    await wait_ready(first_page, READY_SECONDS)
    if read in PAGE_STARTS:
        start = PAGE_STARTS[read]
        cursor = await _cursor_after(client, start)

        async def same_page() -> None:
            await _page(client, cursor, start)

        return same_page
    walks: list[tuple[str, int]] = []  # in progress: the next page's cursor, notes before it

    async def walk() -> None:
        cursor, first = walks.pop() if walks else (None, 0)
        next_cursor = (await _page(client, cursor, first)).meta.next
        if next_cursor is not None:
            walks.append((next_cursor, first + PAGE))

    return walk


async def beds_read_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    """The ``beds_read`` target: a logged-in ``BedsClient`` and the call of ``params["read"]``.

    Waits until the node answers, then prepares the read (fills the cache, finds the cursor of
    the page it reads).
    """
    from beds.client import BedsClient
    from beds.testing import TestIdentity

    read = params["read"]
    if read not in CACHE_READS and read not in PAGE_READS:
        raise ValueError(f"no read {read!r}: one of {', '.join([*CACHE_READS, *PAGE_READS])}")
    # A member, as spew_note's `mine` asks; the seeded notes are this principal's.
    token = TestIdentity.development("bench").token(PRINCIPAL, ("member",))
    client = BedsClient(
        params["url"], origin="bench", env="bench", timeout=CALL_TIMEOUT, token=token
    )
    await client.connect()
    stack.push_async_callback(client.close)
    if read in CACHE_READS:
        return await _cache_call(stack, client, read, random.Random(1))
    return await _page_call(client, read)


def main() -> None:
    load.TARGETS["beds_read"] = beds_read_target
    load.main()


if __name__ == "__main__":
    main()
