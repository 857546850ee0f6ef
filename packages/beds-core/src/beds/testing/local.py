"""The node's request path in-process: a dispatcher over templates and adapters, called as someone.

For tests of templates and adapters without RabbitMQ (a domain's own tests too): every step of a
request but the transport runs (decoding, access rules, validation, capabilities, pagination,
the fetch cache, the store call), with tokens of a :class:`~beds.testing.TestIdentity`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.codec import DEFAULT_MAX_MESSAGE_BYTES, encode_request
from beds.dispatch import Dispatcher
from beds.envelopes import Operation, Request, RequestMeta
from beds.factory import Factory
from beds.pagination import Cursors
from beds.testing.auth import TestIdentity

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from beds.dispatch.cache import FetchCache
    from beds.envelopes import Response
    from beds.namaste import NamasteCore
    from beds.templates.model import Template

__all__ = ("LocalNode",)


class LocalNode:
    """A dispatcher serving ``templates`` from ``adapters`` (store name → adapter).

    Args:
        templates: the templates served.
        adapters: the adapter of each store the templates name.
        identity: signs the callers' tokens (default: a new one for environment ``test``).
        cache: the node's fetch cache, if the test wants one.
        origin: the AMQP user a broker would have vouched for (``meta.origin``).
    """

    def __init__(
        self,
        templates: Iterable[Template],
        adapters: Mapping[str, NamasteCore],
        *,
        identity: TestIdentity | None = None,
        cache: FetchCache | None = None,
        origin: str | None = None,
    ) -> None:
        self.identity = identity or TestIdentity(env="test")
        self.origin = origin
        self.dispatcher = Dispatcher(
            Factory({t.name: t for t in templates}, adapters),
            node="n1",
            env=self.identity.env,
            max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
            authenticator=self.identity.authenticator,
            cursors=Cursors(b"the environment's secret"),
            cache=cache,
        )

    async def call(
        self,
        template: str,
        operation: str,
        payload: dict[str, Any],
        *,
        who: str | None = "ann",
        roles: Iterable[str] = ("member",),
        idempotency_key: str | None = None,
    ) -> Response:
        """Send one request as ``who`` (``None``: anonymous) and return the response."""
        request = Request(
            operation=Operation(operation),
            template=template,
            payload=payload,
            meta=RequestMeta(idempotency_key=idempotency_key),
        )
        credential = None if who is None else self.identity.credential(who, roles)
        _, response = await self.dispatcher.handle(
            encode_request(request), "application/json", None, credential, self.origin
        )
        return response
