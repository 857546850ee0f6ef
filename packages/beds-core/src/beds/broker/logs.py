"""A logs broker: stores the lineage events of the logs exchange through an EventStore.

The admin node runs it (``type = "logs"`` brokers, seed ``adminLogsBroker``). Each message is a
batch of events (:func:`beds.lineage.decode_events`); it is acknowledged only once the store kept
the batch. A store that fails transiently (the database is away) is tried again with back-off
for up to the handler budget; then the batch goes back to the queue (requeued, so settled within
the budget like every delivery) and waits there, so no event is lost. A batch that does not
decode is dead-lettered with the reason, as is one the store refuses for good. A batch published
by an AMQP user outside ``lineage.trusted_users`` (the origin RabbitMQ vouches for with
``user_id``) is dead-lettered with ``BEDS-403O`` and counted, never stored: a forged lineage or
audit trail does not get in.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from beds.broker.messages import origin_of
from beds.broker.pool import BrokerPool
from beds.envelopes import Response, ResponseMeta
from beds.errors import MalformedRequest, RequestError, UntrustedOrigin
from beds.lineage import decode_events

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from beds.lineage import EventStore

__all__ = ("LogsPool",)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, RequestError) and exc.TRANSIENT


class LogsPool(BrokerPool):
    """A broker pool whose messages are event batches to store, not requests to answer."""

    def __init__(
        self, *args: Any, store: EventStore, trusted_users: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.trusted_users = frozenset(trusted_users)
        """AMQP users whose batches are stored; empty: any user RabbitMQ vouched for."""
        self.stored = 0
        """Events kept so far."""

    async def _process(self, message: DeliveredMessage) -> None:
        started = time.perf_counter()
        failure = self._untrusted(message) or await self._keep(message)
        if not self.settle.unsettled(message):
            return  # the store was away: the batch went back to the queue
        if self.observer is not None:  # one handled message, timed like a request's answer
            self.observer.dispatched(None, _outcome(failure, started))
        if failure is not None:
            await self.settle.give_up(message, failure, answer=False)
        else:
            self.settle.ack(message)

    def _untrusted(self, message: DeliveredMessage) -> UntrustedOrigin | None:
        origin = origin_of(message, self.user)
        if origin and (not self.trusted_users or origin in self.trusted_users):
            return None
        return UntrustedOrigin(
            "events from an AMQP user that lineage.trusted_users does not name are not stored",
            details=(f"origin: {origin or '(not vouched for)'}",),
        )

    async def _keep(self, message: DeliveredMessage) -> RequestError | None:
        """Store the batch; what refused it (``None``: kept, or requeued: the store is away)."""
        try:
            events = decode_events(message.body)
        except ValueError as exc:
            return MalformedRequest(str(exc))
        records = [event.to_record() for event in events]
        try:
            await self._store(records)
        except RequestError as exc:
            if exc.TRANSIENT:  # still away after the budget: back to the queue, kept
                await self.settle.requeue(message)
                return None
            return exc  # permanent: the store refuses these events
        self.stored += len(records)
        return None

    async def _store(self, records: list[dict[str, Any]]) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_delay(self.handler_budget),
            wait=wait_exponential_jitter(initial=0.1, max=5.0),
            before_sleep=lambda state: logger.warning(
                "broker {} cannot store {} events yet ({}); trying again",
                self.name,
                len(records),
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        ):
            with attempt:
                await self.store.store_events(records)


def _outcome(failure: RequestError | None, started: float) -> Response:
    """What storing one batch came to, in the form the broker metrics count."""
    meta = ResponseMeta(timings={"total": (time.perf_counter() - started) * 1000})
    if failure is None:
        return Response(ok=True, status=200, meta=meta)
    return Response(ok=False, status=failure.STATUS, error=failure.to_error(), meta=meta)
