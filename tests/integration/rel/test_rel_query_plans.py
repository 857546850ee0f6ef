"""Every REL query of the example domain reads its own rows, not the table, in BEDS' sessions.

The adapter's sessions set ``optimizer_adjust_secondary_key_costs`` with ``disable_max_seek``
(docs/rel.md), and with it MariaDB chose a full scan of ``spp_posts`` for the home view when the
table had few authors (migration 012): a plan a console's ``EXPLAIN`` never showed. So each
query runs here the way a node runs it (``validate_fetch`` → ``read_page`` → the adapter, on
its one pooled connection), first page and the page after it, for a key that owns few rows in
tables that one busy key dominates, and MariaDB's own count of the rows it read
(``Handler_read_*``) must stay near the page: a full scan reads the busy key's rows too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from beds.dispatch.reads import read_page
from beds.namaste import CallContext, Query, StoreSettings
from beds.pagination import Cursors, development_secret
from beds.registry import TemplateRegistry
from beds.templates.validate import validate_fetch
from beds_rel import RelAdapter

pytestmark = pytest.mark.mariadb

REGISTRY = TemplateRegistry()
REGISTRY.add_package("beds_templates_example")
TEMPLATES = {name: t for name, t in REGISTRY.templates.items() if t.store == "rel"}
CTX = CallContext(event_id="test.plans.0")
CURSORS = Cursors(development_secret("test"))

BUSY = 20_000
"""Rows of the busy key in each table: a query that scans reads at least these."""
MOST_READ = 1_000
"""Rows one page of the quiet key may read (its rows, their counts, the index probes)."""

# The quiet key's rows: 'quiet' wrote posts 1-40 (tagged #rare) and 41-50 (replies to post 1),
# notes and boosts; 'me' follows 'quiet' and likes its posts. 'busy' owns the rest. Two authors
# only: with few distinct authors the optimizer is likeliest to prefer a scan to the index.
SETUP = (
    "INSERT INTO spp_posts (author, body, created_at)"
    " SELECT 'quiet', 'q #rare', UTC_TIMESTAMP(6) - INTERVAL seq HOUR FROM seq_1_to_40",
    "INSERT INTO spp_posts (author, body, parent_id) SELECT 'quiet', 'r', 1 FROM seq_1_to_10",
    f"INSERT INTO spp_posts (author, body, created_at) SELECT 'busy', 'b #common',"
    f" UTC_TIMESTAMP(6) - INTERVAL seq MINUTE FROM seq_1_to_{BUSY}",
    "INSERT INTO spp_hashtags (tag, post_id) SELECT 'rare', seq FROM seq_1_to_40",
    f"INSERT INTO spp_hashtags (tag, post_id) SELECT 'common', seq FROM seq_51_to_{BUSY + 50}",
    "INSERT INTO spl_likes (liker, post_id) SELECT 'me', seq FROM seq_1_to_40",
    f"INSERT INTO spl_likes (liker, post_id) SELECT 'fan', seq FROM seq_51_to_{BUSY + 50}",
    "INSERT INTO sfl_follows (follower, followee) VALUES ('me', 'quiet')",
    f"INSERT INTO sfl_follows (follower, followee) SELECT CONCAT('f', seq), 'busy'"
    f" FROM seq_1_to_{BUSY}",
    "INSERT INTO spn_notes (author, body, created_at)"
    " SELECT 'quiet', 'n', UTC_TIMESTAMP(6) - INTERVAL seq HOUR FROM seq_1_to_60",
    f"INSERT INTO spn_notes (author, body, created_at) SELECT 'busy', 'n',"
    f" UTC_TIMESTAMP(6) - INTERVAL seq MINUTE FROM seq_1_to_{BUSY}",
    "INSERT INTO spb_boosts (owner, post_id, budget, active) SELECT 'quiet', 1, 5, TRUE"
    " FROM seq_1_to_60",
    f"INSERT INTO spb_boosts (owner, post_id, budget, active) SELECT 'busy', 60, 5, TRUE"
    f" FROM seq_1_to_{BUSY}",
    "ANALYZE TABLE spp_posts, spp_hashtags, spl_likes, sfl_follows, spn_notes, spb_boosts",
)

PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("spew_boost", "by_id"): {"id": 1},
    ("spew_boost", "mine"): {"owner": "quiet"},
    ("spew_boost", "quote"): {"post_id": 1, "budget": "10.00"},
    ("spew_follow", "following"): {"follower": "me"},
    ("spew_follow", "followers"): {"followee": "quiet"},
    ("spew_follow", "follower_count"): {"followee": "quiet"},
    ("spew_follow", "following_count"): {"follower": "me"},
    ("spew_like", "by_post"): {"post_id": 1},
    ("spew_like", "mine"): {"liker": "me"},
    ("spew_like", "count_by_post"): {"post_id": 1},
    ("spew_note", "by_id"): {"id": 1},
    ("spew_note", "mine"): {"author": "quiet"},
    ("spew_note", "mine_between"): {
        "author": "quiet",
        "since": "2000-01-01T00:00:00+00:00",
        "until": "2100-01-01T00:00:00+00:00",
    },
    ("spew_post", "by_id"): {"id": 1},
    ("spew_post", "by_author"): {"author": "quiet"},
    ("spew_post", "mine"): {"author": "quiet"},
    ("spew_post", "count_by_author"): {"author": "quiet"},
    ("spew_post", "recent"): {},
    ("spew_post", "replies"): {"parent_id": 1},
    ("spew_post", "home"): {"viewer": "me"},
    ("spew_post", "by_hashtag"): {"tag": "rare"},
    ("spew_post", "author_stats"): {"author": "quiet"},
    ("spew_stats", "by_author"): {"author": "quiet"},
}
"""The quiet key's params of each query (a new query needs its row here: see the last test)."""

QUERIES = sorted((t.name, q) for t in TEMPLATES.values() for q in t.queries)


@pytest.fixture(scope="module")
def adapter(mariadb_url: str, loop: asyncio.AbstractEventLoop) -> Iterator[RelAdapter]:
    """An adapter on a database of its own, with one pooled connection (one session)."""
    database = f"beds_plans_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(mariadb_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + database, "", ""))
    rel = RelAdapter.from_settings(
        StoreSettings(
            store="rel", options={"url": url, "connect_timeout": 2, "pool_min": 1, "pool_max": 1}
        )
    )
    for template in TEMPLATES.values():
        rel.prepare(template)
    run = loop.run_until_complete
    try:
        run(rel.apply_schema(REGISTRY.schema["rel"]))
        run(rel.start())
        run(_sql(rel, *SETUP))
        yield rel
    finally:
        run(_sql(rel, f"DROP DATABASE IF EXISTS `{database}`"))
        run(rel.aclose())


async def _sql(rel: RelAdapter, *statements: str) -> list[Any]:
    async with rel._connection() as conn, conn.cursor() as cursor:
        rows: list[Any] = []
        for statement in statements:
            await cursor.execute(statement)
            rows = list(await cursor.fetchall())
        return rows


async def _rows_read(rel: RelAdapter, name: str, payload: dict[str, Any]) -> tuple[int, Any]:
    """The rows MariaDB read for one page in the adapter's session, and the page."""
    template = TEMPLATES[name]
    spec = template.queries[payload["query"]]
    # An internal query (a key query the node reads records by) is not for callers to name.
    query = (
        Query(spec=spec, params=payload["params"], limit=spec.max_limit)
        if spec.internal
        else validate_fetch(template, payload, CURSORS)
    )
    await _sql(rel, "FLUSH STATUS")
    page = await read_page(rel, template, query, CTX, CURSORS)
    status = await _sql(rel, "SHOW SESSION STATUS LIKE 'Handler_read%'")
    return sum(int(value) for _, value in status), page


@pytest.mark.parametrize(("name", "query"), QUERIES, ids=[f"{n}.{q}" for n, q in QUERIES])
def test_a_page_of_a_quiet_key_reads_its_rows_not_the_busy_keys(
    adapter: RelAdapter, loop: asyncio.AbstractEventLoop, name: str, query: str
) -> None:
    payload: dict[str, Any] = {"query": query, "params": PARAMS[name, query]}
    spec = TEMPLATES[name].queries[query]
    if spec.pageable:
        payload["limit"] = min(spec.max_limit, 10)  # so that the quiet key has a next page
    read, page = loop.run_until_complete(_rows_read(adapter, name, payload))
    assert page.records, f"{name}.{query} found none of the quiet key's rows"
    assert read < MOST_READ, f"{name}.{query}: {read} rows read for a page of the quiet key"
    if spec.pageable and page.next is not None:
        after, _ = loop.run_until_complete(
            _rows_read(adapter, name, {**payload, "cursor": page.next})
        )
        assert after < MOST_READ, f"{name}.{query}: {after} rows read for the page after"


def test_every_rel_query_of_the_example_domain_has_its_plan_checked() -> None:
    assert set(PARAMS) == set(QUERIES)
