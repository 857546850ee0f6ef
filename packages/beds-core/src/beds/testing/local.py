"""The node's request path in-process: a dispatcher over templates and adapters, called as someone.

For tests of templates and adapters without RabbitMQ (a domain's own tests too): every step of a
request but the transport runs (decoding, access rules, validation, capabilities, pagination,
the fetch cache, the store call), with tokens of a :class:`~beds.testing.TestIdentity`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.calgon.tickets import WAREHOUSE_LANE
from beds.calgon.worker import TicketWorkers
from beds.codec import DEFAULT_MAX_MESSAGE_BYTES, encode_request
from beds.config.model import CalgonSettings
from beds.dispatch import Dispatcher
from beds.dispatch.calgon import Calgon
from beds.envelopes import Operation, Request, RequestMeta
from beds.factory import Factory
from beds.pagination import Cursors
from beds.testing.auth import TestIdentity

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from beds.calgon.tickets import TicketStore
    from beds.dispatch.cache import FetchCache
    from beds.envelopes import Response
    from beds.namaste import NamasteCore
    from beds.templates.model import Template

__all__ = ("LocalNode",)


class LocalNode:
    """A dispatcher serving ``templates`` from ``adapters`` (by connection: ``rel``, ``rel.wh``).

    Args:
        templates: the templates served.
        adapters: the adapter of each store the templates name.
        identity: signs the callers' tokens (default: a new one for environment ``test``).
        cache: the node's fetch cache, if the test wants one.
        origin: the AMQP user a broker would have vouched for (``meta.origin``).
        tickets: the store of CALGON tickets (``submit`` and ``ticket``), such as a
            :class:`~beds.testing.MemoryAdapter`; its tickets run when the test says
            (:attr:`workers`).
        calgon: CALGON settings (leases, attempts, page size).
    """

    def __init__(
        self,
        templates: Iterable[Template],
        adapters: Mapping[str, NamasteCore],
        *,
        identity: TestIdentity | None = None,
        cache: FetchCache | None = None,
        origin: str | None = None,
        tickets: TicketStore | None = None,
        calgon: CalgonSettings | None = None,
    ) -> None:
        self.identity = identity or TestIdentity(env="test")
        self.origin = origin
        factory = Factory({t.name: t for t in templates}, adapters)
        cursors = Cursors(b"the environment's secret")
        settings = calgon or CalgonSettings()
        self.workers = (
            None
            if tickets is None
            else TicketWorkers(tickets, factory, settings, node="n1", env=self.identity.env)
        )
        """Run the tickets submitted here: ``await node.workers.run_one()`` (default lane)."""
        self.warehouse = (
            None
            if tickets is None
            else TicketWorkers(
                tickets, factory, settings, node="n1", env=self.identity.env, lane=WAREHOUSE_LANE
            )
        )
        """Run the retention sweeps (the ``warehouse`` lane: :mod:`beds.calgon.lanes`)."""
        self.dispatcher = Dispatcher(
            factory,
            node="n1",
            env=self.identity.env,
            max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
            authenticator=self.identity.authenticator,
            cursors=cursors,
            cache=cache,
            calgon=None
            if tickets is None
            else Calgon(tickets, settings, cursors, DEFAULT_MAX_MESSAGE_BYTES),
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
