"""Fetches: a page of records from the cache, the store or the journal, and the next cursor.

A pageable query (``order_by``) asks its adapter for one record more than the page: if it
comes, there is a next page, and ``meta.next`` is the cursor after the page's last record
(:mod:`beds.pagination`). A journaled template's ``history`` query is read from its journal
(a record with an owner shows it to its owner and admins only).
A fetch with consistency ``cached`` of a cached template is answered from the node's fetch
cache when it has the page (:mod:`beds.dispatch.cache`), else from the primary.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import attrs

from beds.envelopes import Consistency
from beds.errors import Unauthenticated, Unauthorized, UnsupportedOperation
from beds.namaste import JournalStore, Record
from beds.templates.model import HISTORY_QUERY

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from beds.dispatch.cache import FetchCache
    from beds.namaste import CallContext, NamasteCore, Query
    from beds.pagination import Cursors
    from beds.templates.model import Template

__all__ = ("Page", "read_page", "serve_fetch")


@attrs.frozen
class Page:
    """What a fetch answers: its records (``data``), and the ``meta`` that goes with them."""

    records: list[Record]
    next: str | None = None
    """The cursor of the next page (``meta.next``), if there is one."""
    cached: bool = False
    """Answered from the node's fetch cache (``meta.cached``)."""


async def read_page(
    adapter: NamasteCore, template: Template, query: Query, ctx: CallContext, cursors: Cursors
) -> Page:
    """Run ``query`` for one page.

    Raises:
        UnsupportedOperation: a history query on a store that keeps no journal.
    """
    spec = query.spec
    asked = attrs.evolve(query, limit=query.limit + 1) if spec.pageable else query
    if spec.name == HISTORY_QUERY and template.capabilities.journal:
        if not isinstance(adapter, JournalStore):
            raise UnsupportedOperation(f"store {adapter.store!r} keeps no journal")
        rows = await adapter.read_journal(
            template, dict(query.params), limit=asked.limit, after=query.after
        )
        _check_history_owner(template, rows, ctx)
    else:
        rows = await adapter.fetch(template, asked, ctx)
    if not spec.pageable or len(rows) <= query.limit:
        return Page(rows)
    rows = rows[: query.limit]
    return Page(rows, next=cursors.make(template.name, spec, query.params, rows[-1]))


async def serve_fetch(
    template: Template,
    adapter: NamasteCore,
    query: Query,
    ctx: CallContext,
    *,
    cursors: Cursors,
    cache: FetchCache | None,
    store: Callable[[Callable[[], Awaitable[Page]]], Awaitable[Page]],
) -> Page:
    """The page ``query`` asks for; ``store`` runs a store call (deadline, retries, lineage)."""
    if (
        cache is None
        or query.consistency is not Consistency.CACHED
        or not cache.caches(template.name)
    ):
        return await store(partial(read_page, adapter, template, query, ctx, cursors))
    key = cache.key(template, query, ctx.principal)
    kept = cache.get(template.name, key)
    if isinstance(kept, Page):
        return attrs.evolve(kept, cached=True)
    generation = cache.generation(template.name)
    primary = attrs.evolve(query, consistency=Consistency.PRIMARY)
    page = await store(partial(read_page, adapter, template, primary, ctx, cursors))
    cache.put(template.name, key, generation, page)
    return page


def _check_history_owner(template: Template, entries: list[Record], ctx: CallContext) -> None:
    """A record with an owner shows its history to its owner (and admins) only.

    Every entry is checked, a deleted record's included (its ``before`` names the owner).

    Raises:
        Unauthenticated: an anonymous caller (BEDS-401).
        Unauthorized: the entries belong to another principal's record (BEDS-403).
    """
    owner = template.access.owner
    if owner is None or not entries:
        return
    identity = ctx.identity
    if identity is None:
        raise Unauthenticated(f"the history of {template.name} records is their owner's")
    if template.access.admin_role in identity.roles:
        return
    for entry in entries:
        record = entry.get("after") or entry.get("before") or {}
        if record.get(owner) != identity.handle:
            raise Unauthorized(
                f"only its owner may read the history of a {template.name} record",
                details=(f"principal: {identity.handle}",),
            )
