"""What the pools of the logs exchange share: whom a batch comes from, and what it came to.

A ``logs`` broker (:mod:`beds.broker.logs`) stores event batches and a ``syslog`` broker
(:mod:`beds.broker.syslog`) forwards them; both believe only batches an AMQP user of
``lineage.trusted_users`` published (:func:`untrusted_origin`), decode them with
:func:`beds.lineage.decode_events`, and report each batch to the metrics as one handled message
(:func:`batch_outcome`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from loguru import logger

from beds.broker.messages import origin_of
from beds.broker.pool import BrokerPool
from beds.envelopes import Response, ResponseMeta
from beds.errors import UntrustedOrigin

if TYPE_CHECKING:
    from collections.abc import Collection

    from aiormq.abc import DeliveredMessage

    from beds.errors import RequestError

__all__ = ("BatchPool", "batch_outcome", "untrusted_origin")


def untrusted_origin(
    message: DeliveredMessage, role_user: str, trusted_users: Collection[str]
) -> UntrustedOrigin | None:
    """Why a batch is not believed (``None``: it is).

    Args:
        message: the delivered batch.
        role_user: the AMQP user of the node's connection (:func:`origin_of` reads against it).
        trusted_users: AMQP users whose batches are believed; empty: any user RabbitMQ vouched
            for.
    """
    origin = origin_of(message, role_user)
    if origin and (not trusted_users or origin in trusted_users):
        return None
    return UntrustedOrigin(
        "events from an AMQP user that lineage.trusted_users does not name are not believed",
        details=(f"origin: {origin or '(not vouched for)'}",),
    )


def batch_outcome(failure: RequestError | None, started: float) -> Response:
    """What handling one batch came to, in the form the broker metrics count.

    Args:
        failure: why the batch was refused (``None``: it was handled).
        started: ``time.perf_counter()`` when its handling started.
    """
    meta = ResponseMeta(timings={"total": (time.perf_counter() - started) * 1000})
    if failure is None:
        return Response(ok=True, status=200, meta=meta)
    return Response(ok=False, status=failure.STATUS, error=failure.to_error(), meta=meta)


class BatchPool(BrokerPool):
    """A pool of the logs exchange: each batch believed or refused, handled, then settled.

    Subclasses set ``trusted_users`` and handle a believed batch in :meth:`_handle`.
    """

    trusted_users: Collection[str] = frozenset()

    async def _process(self, message: DeliveredMessage) -> None:
        started = time.perf_counter()
        failure = untrusted_origin(message, self.user, self.trusted_users) or await self._handle(
            message
        )
        if not self.settle.unsettled(message):
            return  # its destination was away: the batch went back to the queue
        if self.observer is not None:  # one handled message, timed like a request's answer
            self.observer.dispatched(None, batch_outcome(failure, started))
        if failure is not None:
            # Said here as well as in the dead-letter queue: a store refusing every batch (a
            # validator that rejects a new event kind, say) must not be silent.
            logger.warning(
                "broker {} refused a batch of events ({} {}); it goes to the dead-letter queue",
                self.name,
                failure.CODE,
                failure,
            )
            await self.settle.give_up(message, failure, answer=False)
        else:
            self.settle.ack(message)

    async def _handle(self, message: DeliveredMessage) -> RequestError | None:
        """Handle a believed batch; what refused it (``None``: handled, or requeued)."""
        raise NotImplementedError
