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

Events older than ``lineage.retention_days`` are purged by a background task of the pool, never
on the path of a batch: every ``PURGE_INTERVAL`` seconds it deletes them in batches of
``PURGE_BATCH`` with a pause between two, through a store that can (:class:`EventPurger`). A
purge that fails is logged and tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final

from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from beds.broker.batches import BatchPool
from beds.bugs import report_bug
from beds.config.model import LineageSettings
from beds.errors import MalformedRequest, RequestError
from beds.lineage import EventPurger, decode_events

if TYPE_CHECKING:
    from aiormq.abc import AbstractConnection, DeliveredMessage

    from beds.lineage import EventStore

__all__ = ("PURGE_BATCH", "PURGE_INTERVAL", "LogsPool")

PURGE_INTERVAL: Final = 600.0
"""Seconds between two purges of old events."""
PURGE_BATCH: Final = 1000
"""Most events one delete removes."""
_PURGE_PAUSE = 0.2
"""Seconds between two batches of one purge, so the store serves the brokers' writes too."""
_DAY = 86400.0


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, RequestError) and exc.TRANSIENT


class LogsPool(BatchPool):
    """A broker pool whose messages are event batches to store, not requests to answer."""

    def __init__(
        self,
        *args: Any,
        store: EventStore,
        trusted_users: tuple[str, ...] = (),
        retention_days: int = LineageSettings().retention_days,
        purge_interval: float = PURGE_INTERVAL,
        purge_batch: int = PURGE_BATCH,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.trusted_users = frozenset(trusted_users)
        """AMQP users whose batches are stored; empty: any user RabbitMQ vouched for."""
        self.stored = 0
        """Events kept so far."""
        self.retention_days = retention_days
        """Days events are kept (``lineage.retention_days``); 0: forever."""
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self.purged = 0
        """Events this pool deleted as older than ``retention_days``."""
        self._purging: asyncio.Task[None] | None = None

    async def start(self, connection: AbstractConnection) -> None:
        """Start consuming (:meth:`BrokerPool.start`), and the purge of old events."""
        await super().start(connection)
        if self._purging is not None and not self._purging.done():
            return
        if not self.retention_days:
            return
        if not isinstance(self.store, EventPurger):
            logger.warning(
                "broker {}: the event store cannot purge, so events are kept beyond "
                "lineage.retention_days ({})",
                self.name,
                self.retention_days,
            )
            return
        self._purging = asyncio.create_task(
            self._purge_loop(self.store), name=f"beds-{self.name}-purge"
        )

    async def stop(self, drain_seconds: float) -> None:
        """Stop the purge (a batch cut short is harmless), then the pool."""
        task, self._purging = self._purging, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await super().stop(drain_seconds)

    async def _handle(self, message: DeliveredMessage) -> RequestError | None:
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
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0),
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

    async def _purge_loop(self, purger: EventPurger) -> None:
        """Every ``purge_interval`` seconds, purge what is older than ``retention_days``."""
        while True:
            await asyncio.sleep(self.purge_interval)
            before = time.time() - self.retention_days * _DAY
            try:
                purged = await self._purge(purger, before)
            except RequestError as exc:
                logger.warning(
                    "broker {} could not purge lineage events older than {} days ({}); "
                    "trying again in {:g} s",
                    self.name,
                    self.retention_days,
                    exc,
                    self.purge_interval,
                )
                continue
            except Exception as exc:  # the loop must outlive any failure, a bug included
                report_bug(exc, "broker {} purging lineage events failed", self.name)
                continue
            if purged:
                logger.info(
                    "broker {} purged {} lineage events older than {} days",
                    self.name,
                    purged,
                    self.retention_days,
                )

    async def _purge(self, purger: EventPurger, before: float) -> int:
        """Delete the events older than ``before``, batch by batch; return how many."""
        total = 0
        while True:
            deleted = await purger.purge_events(before, self.purge_batch)
            total += deleted
            self.purged += deleted
            if deleted < self.purge_batch:
                return total
            await asyncio.sleep(_PURGE_PAUSE)
