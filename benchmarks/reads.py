"""The read scenarios: the fetch cache against the store, and keyset pagination (issue 15).

- **Cache**: the same template, query and keys twice, the cached side sending
  ``"consistency": "cached"``, the uncached side ``"primary"`` (which bypasses the cache). REC:
  the example's ``spew_profile`` (``cache = true``) by handle over the seed profiles; REL:
  ``bench_post`` by id over the seed posts, a benchmark-only template reading ``spew_post``'s
  ``spp_posts_v`` with the cache on (the example has no cached REL template).
- **Pagination**: ``spew_note``'s ``mine`` (newest first: ``-created_at, -id``, keyset) over
  ``NOTES`` notes of the bench principal, seeded for the run, ``PAGE`` a page: the first page,
  a middle and a deep page (after ``MID_AFTER`` and ``DEEP_AFTER`` notes), walks (each call the
  next page of a walk, the cursor from ``meta.next``), and a plain fetch of the same size
  (``bench_note``'s ``plain``: the same view and notes, in no declared order, so with no cursor
  to make or check).

Every read scenario runs on a ``beds run`` node of the run's config that also loads the
benchmark templates (``benchmarks/read_domain``), and on the client side runs
``python -m benchmarks.read_load``. :func:`prepare` seeds the notes and writes the
distribution folder through which those nodes find the templates' plugin, when a read scenario
is selected; everything it makes is in the run's database and temporary folder, removed with
them. :func:`ratios` adds the read ratios to the run's, :func:`print_ratios` prints them.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any, Final

from benchmarks import report
from benchmarks.resources import ROOT
from benchmarks.scenarios import Scenario
from benchmarks.work import SEED_POSTS, SEED_PROFILES, mysql_kwargs

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from benchmarks.resources import Resources

NOTES: Final = 20_000
"""Notes seeded for the pagination scenarios, all the bench principal's."""
PAGE: Final = 50
"""Records a page (``spew_note``'s ``mine`` allows 50 at most)."""
MID_AFTER: Final = 10_000
"""The middle page starts after this many notes (page 201 of 400)."""
DEEP_AFTER: Final = 19_750
"""The deep page starts after this many notes (page 396 of 400)."""
PRINCIPAL: Final = "bench"
"""The handle the read scenarios' client logs in as, and the seeded notes' author."""
NOTE_PREFIX: Final = "Benchmark note "
"""A seeded note's body: this, its rank (0 the newest, five digits), a colon and some text."""
LOAD_MODULE: Final = "benchmarks.read_load"
PLUGIN_FOLDER: Final = "bench-reads"
"""In the run's temporary folder: the distribution that declares the templates' entry point."""

READ_PAIRS: Final = (
    ("beds_rel_fetch_cached", "beds_rel_fetch_uncached"),
    ("beds_rec_fetch_cached", "beds_rec_fetch_uncached"),
    ("beds_rel_fetch_deep_page", "beds_rel_fetch_page"),
    ("beds_rel_fetch_mid_page", "beds_rel_fetch_page"),
    ("beds_rel_fetch_walk", "beds_rel_fetch_page"),
    ("beds_rel_fetch_page", "beds_rel_fetch_plain"),
    ("beds_rel_fetch_walk", "beds_rel_fetch_plain"),
    ("beds_rec_fetch", "beds_rec_fetch_cached"),
)
"""What the cache brings (cached / uncached), what depth costs a page (deep / first: keyset
pagination should keep it near 1), what paging costs (pages / a plain fetch of the same size),
and ``beds_rec_fetch`` (spew_profile with its default consistency, cached) against the cached
read: requests/s at each number in flight (no target)."""


def plugin_path(res: Resources) -> Path:
    """The folder on the read scenarios' nodes' ``PYTHONPATH``."""
    return res.tmp / PLUGIN_FOLDER


def build(res: Resources) -> list[Scenario]:
    """The read scenarios, in the order they run."""
    env = {"PYTHONPATH": os.pathsep.join((str(plugin_path(res)), str(ROOT)))}

    def scenario(key: str, read: str, label: str, note: str) -> Scenario:
        return Scenario(
            key=key,
            group="beds",
            label=f"BedsClient → beds run, {label}",
            operation="rec_fetch" if read.startswith("rec") else "rel_fetch",
            server="beds",
            load={
                "module": LOAD_MODULE,
                "target": "beds_read",
                "params": {"url": res.amqp_url, "read": read},
            },
            note=note,
            extra={"env": env},
        )

    def cache_note(template: str, consistency: str, twin: str, reads: str) -> str:
        return (
            f"{template}, `consistency` `{consistency}`: {reads}. The same template, query and "
            f"keys as `{twin}`."
        )

    rel = "`bench_post` (benchmarks/read_domain: `spp_posts_v` by id, cache on, TTL 600 s)"
    rec = "`spew_profile` (cache on, TTL 30 s)"
    warm = (
        "the node's cache, filled before the runs (the load generator's log says how many "
        "replies came from it)"
    )
    out = [
        scenario(
            "beds_rel_fetch_cached",
            "rel_cached",
            f"rel fetch by id, cached ({SEED_POSTS:,} posts)",
            cache_note(rel, "cached", "beds_rel_fetch_uncached", warm),
        ),
        scenario(
            "beds_rel_fetch_uncached",
            "rel_uncached",
            "rel fetch by id, consistency primary (the cache bypassed)",
            cache_note(rel, "primary", "beds_rel_fetch_cached", "every fetch reads MariaDB"),
        ),
        scenario(
            "beds_rec_fetch_cached",
            "rec_cached",
            f"rec fetch by handle, cached ({SEED_PROFILES:,} profiles)",
            cache_note(rec, "cached", "beds_rec_fetch_uncached", warm),
        ),
        scenario(
            "beds_rec_fetch_uncached",
            "rec_uncached",
            "rec fetch by handle, consistency primary (the cache bypassed)",
            cache_note(rec, "primary", "beds_rec_fetch_cached", "every fetch reads SecantusDB"),
        ),
    ]
    pages = f"`spew_note` `mine` over {NOTES:,} notes, {PAGE} a page, newest first"
    # The pages the database reads cheaply first, then those that make it read every note
    # before the cursor (docs/benchmarks.md), so that these do not slow the others.
    out += [
        scenario(
            "beds_rel_fetch_page",
            "page",
            f"rel fetch, the first page of {PAGE} ({NOTES:,} notes)",
            f"{pages}: the first page (no cursor; the reply carries `meta.next`).",
        ),
        scenario(
            "beds_rel_fetch_deep_page",
            "deep_page",
            f"rel fetch, the page after {DEEP_AFTER:,} notes (cursor)",
            f"{pages}: the page after the first {DEEP_AFTER:,} notes, every call with the "
            "cursor found by walking there once. With keyset pagination it costs what the "
            "first page (`beds_rel_fetch_page`) costs, if the database reads it as a range.",
        ),
        scenario(
            "beds_rel_fetch_plain",
            "plain",
            f"rel fetch of {PAGE} notes, unordered, no cursor",
            f"`bench_note` `plain` (benchmarks/read_domain): the same view and notes as "
            f"`spew_note` `mine`, {PAGE} a fetch, in no declared order, so there is no cursor to "
            "check or make: the plain fetch the pages are set against.",
        ),
        scenario(
            "beds_rel_fetch_mid_page",
            "mid_page",
            f"rel fetch, the page after {MID_AFTER:,} notes (cursor)",
            f"{pages}: the page after the first {MID_AFTER:,} notes, as "
            "`beds_rel_fetch_deep_page`.",
        ),
        scenario(
            "beds_rel_fetch_walk",
            "walk",
            f"rel fetch, walks of {NOTES // PAGE} pages (cursor from meta.next)",
            f"{pages}: every call fetches the next page of one of the walks in progress "
            "(as many as requests in flight), with the cursor of the page before, and checks "
            "that a walk sees every note once, in order.",
        ),
    ]
    return out


def selected(scenarios: Iterable[Scenario]) -> bool:
    """Whether a read scenario is among ``scenarios``."""
    return any(scenario.load.get("module") == LOAD_MODULE for scenario in scenarios)


def prepare(res: Resources, scenarios: Iterable[Scenario]) -> None:
    """When a read scenario is selected: seed the notes, and write the plugin's distribution.

    Call after ``res.open()`` (the example schema is installed).
    """
    if not selected(scenarios):
        return
    _write_distribution(plugin_path(res))
    _seed_notes(res)


def _write_distribution(folder: Path) -> None:
    """A distribution with nothing but metadata: its entry point names the templates' plugin
    (``benchmarks.read_domain``, importable from the repository), so that a node finds it as
    it finds any installed domain, only when this folder is on its ``PYTHONPATH``."""
    info = folder / "beds_bench_reads-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: beds-bench-reads\nVersion: 0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[beds]\nbench_reads = benchmarks.read_domain\n", encoding="utf-8"
    )


def _seed_notes(res: Resources) -> None:
    """``NOTES`` notes of the bench principal, one second apart, the newest first in rank.

    Loaded as a DBA loads data, in multi-row inserts (PyMySQL's ``executemany``), not through
    ``spn_create`` one call at a time; each note's body starts with its rank, so the client
    checks which notes a page holds.
    """
    import pymysql

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    rows = [
        (
            PRINCIPAL,
            f"{NOTE_PREFIX}{rank:05d}: a note to self, " + "lorem ipsum " * 6,
            now - dt.timedelta(seconds=rank),
        )
        for rank in range(NOTES)
    ]
    conn = pymysql.connect(**mysql_kwargs(res.mysql_url))
    try:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO `spn_notes` (`author`, `body`, `created_at`) VALUES (%s, %s, %s)",
                rows,
            )
    finally:
        conn.close()


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The read ratios, in the shape of :func:`benchmarks.report.ratios`' (no target)."""
    return [
        {
            "numerator": numerator,
            "denominator": denominator,
            "concurrency": concurrency,
            "metric": "rps",
            "value": report._ratio(results, numerator, denominator, concurrency, "rps"),
            "target": None,
            "comparison": ">=",
            "met": None,
        }
        for numerator, denominator in READ_PAIRS
        for concurrency in report.CONCURRENCIES
    ]


def print_ratios(results: dict[str, Any]) -> None:
    """The read ratios of the run, one row per pair (nothing when no read scenario ran)."""
    values = {
        (r["numerator"], r["denominator"], r["concurrency"]): r["value"]
        for r in results["ratios"]
        if (r["numerator"], r["denominator"]) in READ_PAIRS
    }
    rows = [
        pair
        for pair in READ_PAIRS
        if any(values.get((*pair, c)) is not None for c in report.CONCURRENCIES)
    ]
    if not rows:
        return
    header = "".join(f"{c:>8}" for c in report.CONCURRENCIES)
    print(f"\n{'reads: req/s ratio (in flight)':<58}{header}")
    for numerator, denominator in rows:
        cells = "".join(
            f"{value:>8.2f}" if value is not None else f"{'-':>8}"
            for value in (values.get((numerator, denominator, c)) for c in report.CONCURRENCIES)
        )
        print(f"{numerator + ' / ' + denominator:<58}{cells}")
