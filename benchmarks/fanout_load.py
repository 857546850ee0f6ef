"""The load generator's fan-out target: one client transaction, 24 concurrent BEDS calls.

``python -m benchmarks.fanout_load SPEC_JSON`` is ``python -m benchmarks.load`` (same spec, same
runs, same output) with one more target, ``beds_fanout`` (``params``: ``url``). One call is one
transaction: what a SPEW home page asks for, ``CALLS`` fetches sent at once (``asyncio.gather``)
from one logged-in :class:`beds.client.BedsClient`, all under one lineage parent (a fresh event
id per transaction, passed as every call's ``parent_id``, so the node records 24 children of
one root); the transaction ends when the last reply is in, and every reply must be ok. Its
latency is the page's; the spec's ``per_call`` (``{"unit": "calls", "n": 24}``) makes each run
report ``calls_per_s`` too.

The page, for the bench member (who follows ``seed_author``, the author of the run's seed posts:
the target makes that follow before the runs):

- the page owner's profile (``spew_profile`` ``by_handle``, a seed profile) and the profiles of
  ten timeline authors (``by_handles``);
- the home timeline (``spew_post`` ``home``, 20 posts), the latest posts (``recent``, 10), the
  followed author's posts and count (``by_author``, ``count_by_author``), the member's own
  posts (``mine``);
- follow counts both ways, whom the member follows and who follows the author
  (``spew_follow``), the member's likes (``spew_like`` ``mine``);
- six posts by id (``spew_post`` ``by_id``) and the like count of each (``spew_like``
  ``count_by_post``).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any, Final

from benchmarks import load
from benchmarks.load import CALL_TIMEOUT, BadReply, Call
from benchmarks.work import SEED_POSTS, SEED_PROFILES

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

MEMBER: Final = "bench"
"""The handle the client logs in as."""
FOLLOWED: Final = "seed_author"
"""The author of the run's seed posts, whom the member follows (a full home timeline)."""
POSTS_BY_ID: Final = 6
"""Posts the page reads by id, and the like counts it reads for them."""


def page(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """The page's fetches: (template, fetch payload), ``CALLS`` of them."""
    owner = f"seed_{rng.randrange(SEED_PROFILES)}"
    authors = [f"seed_{n}" for n in rng.sample(range(SEED_PROFILES), 10)]
    ids = rng.sample(range(1, SEED_POSTS + 1), POSTS_BY_ID)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("spew_profile", {"query": "by_handle", "params": {"handle": owner}}),
        ("spew_profile", {"query": "by_handles", "params": {"handles": authors}}),
        ("spew_post", {"query": "home", "params": {}, "limit": 20}),
        ("spew_post", {"query": "recent", "params": {}, "limit": 10}),
        ("spew_post", {"query": "by_author", "params": {"author": FOLLOWED}, "limit": 10}),
        ("spew_post", {"query": "count_by_author", "params": {"author": FOLLOWED}}),
        ("spew_post", {"query": "mine", "params": {}, "limit": 10}),
        ("spew_follow", {"query": "following_count", "params": {"follower": MEMBER}}),
        ("spew_follow", {"query": "follower_count", "params": {"followee": MEMBER}}),
        ("spew_follow", {"query": "following", "params": {}, "limit": 20}),
        ("spew_follow", {"query": "followers", "params": {"followee": FOLLOWED}, "limit": 20}),
        ("spew_like", {"query": "mine", "params": {}, "limit": 20}),
    ]
    calls += [("spew_post", {"query": "by_id", "params": {"id": n}}) for n in ids]
    calls += [("spew_like", {"query": "count_by_post", "params": {"post_id": n}}) for n in ids]
    return calls


CALLS: Final = len(page(random.Random(0)))
"""BEDS calls per transaction (24)."""


async def beds_fanout_target(stack: AsyncExitStack, params: dict[str, Any]) -> Call:
    """The ``beds_fanout`` target: a logged-in client; one call is one page (``CALLS`` fetches)."""
    from beds.client import BedsClient
    from beds.envelopes import Operation
    from beds.lineage import new_event_id
    from beds.testing import TestIdentity

    token = TestIdentity.development("bench").token(MEMBER, ("member",))
    client = BedsClient(
        params["url"], origin="bench", env="bench", timeout=CALL_TIMEOUT, token=token
    )
    await client.connect()
    stack.push_async_callback(client.close)

    async def follow() -> None:
        # Following is idempotent: a second follow keeps one.
        await client.create("spew_follow", {"followee": FOLLOWED})

    await load.wait_ready(follow, 60)
    rng = random.Random(1)

    async def transaction() -> None:
        parent = new_event_id("bench", "bench")
        fetches = page(rng)
        replies = await asyncio.gather(
            *(
                client.call(template, Operation.FETCH, payload, parent_id=parent, depth=1)
                for template, payload in fetches
            )
        )
        for (template, payload), reply in zip(fetches, replies, strict=True):
            if not reply.ok:
                raise BadReply(f"{template} {payload['query']}: {reply.error}"[:300])
        home = replies[2].data
        if not home:
            raise BadReply("the home timeline is empty (the member follows the seed author)")

    return transaction


def main() -> None:
    load.TARGETS["beds_fanout"] = beds_fanout_target
    load.main()


if __name__ == "__main__":
    main()
