"""The fetch cache of templates declared with ``cache = true``: per node, coherent across nodes.

- **What is kept.** Per template, at most ``capabilities.cache_size`` pages for at most
  ``capabilities.cache_ttl`` seconds (cachetools' ``TTLCache``), keyed by query, params, limit
  and cursor, and by principal when the template has an owner field (one principal's answer
  is never served to another).
- **Invalidation.** A write of the template drops the template's pages on its node at once,
  and publishes ``cache.invalidate`` on the control channel (confirmed before the write is
  answered); every node that reads it drops them too. The bound is the control stream's
  delivery time, milliseconds on a healthy node (docs/templates.md, "Cache").
- **No stale store.** Each template has a generation, raised by every invalidation; a fetch
  that began before one never stores its page, so a slow read cannot put back what a write
  made old.
- **Only while coherent.** Pages are served only while the node reads the control channel
  (``live``); while it does not, every fetch goes to the store, and the cache is emptied when
  it reads again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from cachetools import TTLCache
from loguru import logger

if TYPE_CHECKING:
    from beds.namaste import Query
    from beds.templates.model import Template

__all__ = ("INVALIDATE", "FetchCache")

INVALIDATE: Final = "cache.invalidate"
"""The control-event kind of an invalidation: ``{"template": name}``."""

Publish = Callable[[str, dict[str, Any]], Awaitable[object]]


class FetchCache:
    """The fetch cache of one node (see the module docstring).

    Args:
        templates: the node's templates; those with ``capabilities.cache`` are cached.
        publish: publishes a control event (``ControlChannel.publish``).
        live: whether the node reads the control channel now.
    """

    def __init__(
        self,
        templates: Mapping[str, Template],
        *,
        publish: Publish | None = None,
        live: Callable[[], bool] = lambda: True,
    ) -> None:
        self._pages: dict[str, TTLCache[str, object]] = {
            name: TTLCache(maxsize=t.capabilities.cache_size, ttl=t.capabilities.cache_ttl)
            for name, t in templates.items()
            if t.capabilities.cache
        }
        self._generation = dict.fromkeys(self._pages, 0)
        self.publish = publish
        self.live = live
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    def caches(self, template: str) -> bool:
        """Whether ``template``'s fetches are cached."""
        return template in self._pages

    def key(self, template: Template, query: Query, principal: str | None) -> str:
        """The key of a fetch's page."""
        scoped = principal if template.access.owner is not None else None
        return orjson.dumps(
            [query.spec.name, query.params, query.limit, query.after, scoped],
            default=str,
            option=orjson.OPT_SORT_KEYS,
        ).decode()

    def get(self, template: str, key: str) -> object | None:
        """The cached page, if the cache may serve now and has it."""
        if not self.live():
            return None
        page = self._pages[template].get(key)
        if page is None:
            self.misses += 1
        else:
            self.hits += 1
        return page

    def generation(self, template: str) -> int:
        """Take before reading the store; give to :meth:`put`."""
        return self._generation[template]

    def put(self, template: str, key: str, generation: int, page: object) -> None:
        """Keep a page read from the store, unless an invalidation came since it was read."""
        if generation == self._generation[template] and self.live():
            self._pages[template][key] = page

    def invalidate(self, template: str) -> None:
        """Drop the template's pages on this node."""
        if template in self._pages:
            self._pages[template].clear()
            self._generation[template] += 1
            self.invalidations += 1

    async def written(self, template: str) -> None:
        """A write of ``template`` succeeded: drop its pages here, and tell every node."""
        if template not in self._pages:
            return
        self.invalidate(template)
        if self.publish is not None:
            try:
                await self.publish(INVALIDATE, {"template": template})
            except Exception as exc:  # the write is done; other nodes' pages expire by TTL
                logger.warning(
                    "cache invalidation of {} was not published ({}); other nodes keep its "
                    "pages for at most cache_ttl",
                    template,
                    exc,
                )

    def clear(self) -> None:
        """Drop every page (the control channel was away: invalidations may be missed)."""
        for name in self._pages:
            self.invalidate(name)
