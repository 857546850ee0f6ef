"""A logs broker: stores the lineage events of the logs exchange through an EventStore.

The admin node runs it (``type = "logs"`` brokers, seed ``adminLogsBroker``). Each message is a
batch of events (:func:`beds.lineage.decode_events`); it is acknowledged only once the store kept
the batch. A store that fails transiently (the database is away) is tried again with back-off
while the message stays unacknowledged, so no event is lost; a batch that does not decode is
dead-lettered with the reason, as is one the store refuses for good.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from beds.broker.pool import BrokerPool
from beds.errors import MalformedRequest, RequestError
from beds.lineage import decode_events

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from beds.lineage import EventStore

__all__ = ("LogsPool",)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, RequestError) and exc.TRANSIENT


class LogsPool(BrokerPool):
    """A broker pool whose messages are event batches to store, not requests to answer."""

    def __init__(self, *args: Any, store: EventStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.stored = 0
        """Events kept so far."""

    async def _process(self, message: DeliveredMessage) -> None:
        try:
            events = decode_events(message.body)
        except ValueError as exc:
            await self._dead_letter(message, MalformedRequest(str(exc)))
            await self._ack(message)
            return
        records = [event.to_record() for event in events]
        try:
            await self._store(records)
        except RequestError as exc:  # permanent: the store refuses these events
            await self._dead_letter(message, exc)
        else:
            self.stored += len(records)
        await self._ack(message)

    async def _store(self, records: list[dict[str, Any]]) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
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
