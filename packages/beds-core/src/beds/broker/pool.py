"""A supervised pool of broker tasks consuming one queue.

One consume channel per broker type; RabbitMQ pushes up to ``prefetch`` messages into an
in-process inbox; ``instances`` worker tasks take one message at a time, dispatch it, publish the
reply and only then acknowledge it. A worker task that dies is logged and replaced (the pool never
shrinks) and the message it held goes back to the queue.

Every delivery is settled (:mod:`beds.broker.settle`): a message whose processing raises is
dead-lettered and acknowledged, with one log line; one still held past ``handler_budget +
settle_grace`` is dead-lettered (``BEDS-504H``), its caller told, and its handler cancelled. A
channel RabbitMQ closes is opened again (its deliveries return to the queue).

Replies to reads and every ack go through the pool's :class:`~beds.transport.outbox.Outbox`, which
writes what one turn of the event loop produced in one chunk (a reply before its ack, acks
coalesced). Replies to writes, dead letters and requeued copies are published on a second
channel with publisher confirms, and the request is acknowledged once RabbitMQ confirmed them. A
reply that cannot be delivered follows the policy of docs/architecture.md ("Undeliverable
replies"): a write that ran keeps its outcome in the dead-letter queue; nothing runs twice.

A pool reports each outcome to an optional :class:`BrokerObserver` (``beds.telemetry`` is one),
and :meth:`BrokerPool.holding` tells which messages are in flight since when.

Why this module is long: supervision (tasks, the budget watch, lost channels) and the path of
one message share one state (what each task holds, since when, and whether it is settled);
settling (:mod:`beds.broker.settle`) and replies (:mod:`beds.broker.replies`) live apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from loguru import logger

from beds.auth.credential import CREDENTIAL_HEADER
from beds.broker.messages import event_id_of, origin_of, request_of, route, undecodable
from beds.broker.replies import Replies, encode_reply
from beds.broker.settle import AMQP_FAILURES, BrokerObserver, Settler, delivery_tag
from beds.bugs import report_bug
from beds.errors import (
    HandlerStopped,
    InternalError,
    MalformedRequest,
    RequestError,
)
from beds.transport.outbox import Outbox
from beds.wire_limits import check_request_properties, safe_shortstr

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

    from beds.config.model import BrokerSettings
    from beds.dispatch import Dispatcher

__all__ = ("BrokerObserver", "BrokerPool")


class BrokerPool:
    """One broker type on this node: a queue, a channel and ``instances`` supervised tasks."""

    def __init__(
        self,
        name: str,
        settings: BrokerSettings,
        *,
        queue: str,
        dispatcher: Dispatcher,
        dead_letter_exchange: str,
        count_redeliveries: bool = True,
        user: str = "",
        observer: BrokerObserver | None = None,
    ) -> None:
        self.name = name
        self.user = user
        """The AMQP user of the node's connection: origins are read against it."""
        self.settings = settings
        self.queue = queue
        self.dispatcher = dispatcher
        self.dead_letter_exchange = dead_letter_exchange
        reliability = dispatcher.reliability
        self.max_deliveries = reliability.max_deliveries
        # Classic queues keep no delivery count: the pool counts redeliveries in a header.
        # Quorum queues count them and dead-letter at x-delivery-limit themselves.
        self.count_redeliveries = count_redeliveries
        self.handled = 0
        self.replaced = 0
        self.over_budget = 0
        """Messages handled for longer than ``reliability.handler_budget`` (each counted once)."""
        self.stopped = 0
        """Handlers stopped past ``handler_budget + settle_grace`` (their delivery settled)."""
        self.channels_reopened = 0
        self.handler_budget = reliability.handler_budget
        self.settle_limit = reliability.handler_budget + reliability.settle_grace
        self.observer = observer
        self.settle = Settler(
            broker=name,
            queue=queue,
            node=dispatcher.node,
            dead_letter_exchange=dead_letter_exchange,
            user=user,
            observer=observer,
        )
        self.replies = Replies(self.settle, broker=name)
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._holding: dict[int, DeliveredMessage] = {}
        self._taken_at: dict[int, float] = {}
        """``time.monotonic()`` when each slot took its message (valid while it is held)."""
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        """The consume channel (no publisher confirms): reads' replies and every ack."""
        self._consumer_tag: str | None = None
        self._budget_watch: asyncio.Task[None] | None = None
        self._reopening: asyncio.Task[None] | None = None
        self._late: set[int] = set()
        """``id()`` of the held messages already reported past the budget."""
        self._stopping = False
        self.paused = False
        """An operator paused it (:mod:`beds.broker.operator`): it holds its channel and
        finishes what it holds, but RabbitMQ delivers it nothing until it is resumed."""
        self._idle = asyncio.Event()
        """Set when no message is held or waiting (drain waits for it)."""

    @property
    def dead_lettered(self) -> int:
        """Messages this pool published to the dead-letter exchange."""
        return self.settle.dead_lettered

    @property
    def replies_lost(self) -> int:
        """Replies that could not be delivered (a read's, or a write's kept as a dead letter)."""
        return self.replies.lost

    @property
    def size(self) -> int:
        """Live worker tasks (equals ``instances`` while running)."""
        return sum(1 for task in self._workers.values() if not task.done())

    @property
    def in_flight(self) -> int:
        """Messages being handled right now."""
        return len(self._holding)

    @property
    def consuming(self) -> bool:
        """Whether RabbitMQ is delivering to this pool (started, not stopping, channel open)."""
        channel = self._channel
        return (
            self._consumer_tag is not None
            and not self._stopping
            and channel is not None
            and not channel.is_closed
        )

    def holding(self) -> list[tuple[float, DeliveredMessage]]:
        """The messages being handled now, each with the ``time.monotonic()`` it was taken."""
        return [(self._taken_at[slot], message) for slot, message in self._holding.items()]

    def oldest_unsettled(self, now: float | None = None) -> float:
        """Seconds the oldest delivery not yet settled has waited (0 when none)."""
        return self.settle.oldest_age(time.monotonic() if now is None else now)

    # -- life ---------------------------------------------------------------------------------

    async def start(self, connection: AbstractConnection) -> None:
        """Open the channels, start the workers, then start consuming."""
        self._stopping = False
        self._connection = connection
        channel = await connection.channel(publisher_confirms=False)
        prefetch = self.settings.prefetch or 2 * self.settings.instances
        await channel.basic_qos(prefetch_count=prefetch)
        confirms = await connection.channel(publisher_confirms=True)
        self._channel = channel
        self.settle.attach(Outbox(channel), Outbox(confirms))
        for open_channel in (channel, confirms):
            open_channel.closing.add_done_callback(self._on_channel_closed)
        channel.on_consumer_cancel_callbacks.add(self._on_consumer_cancelled)
        self._inbox = asyncio.Queue()
        for slot in range(self.settings.instances):
            self._spawn(slot)
        self._budget_watch = asyncio.create_task(
            self._watch_budget(), name=f"beds-{self.name}-budget"
        )
        if self.paused:  # reopened or reconnected while paused: stays paused
            logger.info("broker {} is paused: not consuming {}", self.name, self.queue)
            return
        await self._consume()
        logger.info(
            "broker {} consuming {} with {} tasks (prefetch {})",
            self.name,
            self.queue,
            self.settings.instances,
            prefetch,
        )

    async def _consume(self) -> None:
        channel = self._channel
        assert channel is not None  # start() opened it
        ok = await channel.basic_consume(self.queue, self._on_message)
        self._consumer_tag = ok.consumer_tag

    async def pause(self) -> None:
        """Stop taking messages; those held finish and are settled as usual."""
        self.paused = True
        channel, tag = self._channel, self._consumer_tag
        self._consumer_tag = None
        if channel is not None and tag is not None and not channel.is_closed:
            with contextlib.suppress(*AMQP_FAILURES):
                await channel.basic_cancel(tag)
        logger.warning("broker {} paused: {} waits in its queue", self.name, self.queue)

    async def resume(self) -> None:
        """Take messages again after :meth:`pause`."""
        if not self.paused:
            return
        self.paused = False
        channel = self._channel
        if channel is not None and not channel.is_closed and not self._stopping:
            await self._consume()
        logger.info("broker {} resumed consuming {}", self.name, self.queue)

    async def stop(self, drain_seconds: float) -> None:
        """Stop consuming, let held and queued messages finish (up to ``drain_seconds``), close."""
        self._stopping = True
        channel = self._channel
        if channel is not None and self._consumer_tag is not None and not channel.is_closed:
            with contextlib.suppress(*AMQP_FAILURES):
                await channel.basic_cancel(self._consumer_tag)
        self._consumer_tag = None
        if self._holding or not self._inbox.empty():
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_seconds)
        tasks = list(self._workers.values())
        current = asyncio.current_task()
        for extra in (self._budget_watch, self._reopening):
            if extra is not None and extra is not current:
                tasks.append(extra)
        self._budget_watch = None
        if self._reopening is not current:
            self._reopening = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._holding.clear()
        consume, confirms = self.settle.consume, self.settle.confirms
        for outbox in (confirms, consume):
            if outbox is not None:
                await outbox.aclose()  # the last replies and acks, before channel.close
        # Anything not acknowledged returns to the queue when the channel closes.
        for outbox in (confirms, consume):
            if outbox is not None and not outbox.channel.is_closed:
                with contextlib.suppress(*AMQP_FAILURES):
                    await outbox.channel.close()

    def _on_channel_closed(self, future: asyncio.Future[Any]) -> None:
        """RabbitMQ closed one of the pool's channels: open both again, unless stopping."""
        connection = self._connection
        if self._stopping or connection is None or connection.is_closed:
            return  # stopping, or the node reconnects the whole connection
        if self._reopening is not None and not self._reopening.done():
            return
        reason = future.exception() if not future.cancelled() else None
        logger.warning("broker {} lost a channel ({}); opening it again", self.name, reason)
        self._reopening = asyncio.create_task(self._reopen(), name=f"beds-{self.name}-reopen")

    def _on_consumer_cancelled(self, frame: Any) -> None:
        """RabbitMQ cancelled the consumer (its queue was deleted or crashed): consume again.

        Until it consumes again the pool reports it does not (``consuming``), so ``/ready``
        answers 503 and ``beds status`` shows it.
        """
        if self._stopping or frame.consumer_tag != self._consumer_tag:
            return
        self._consumer_tag = None
        logger.error(
            "RabbitMQ cancelled broker {}'s consumer of {} (queue deleted or failed); "
            "consuming again",
            self.name,
            self.queue,
        )
        if self._reopening is None or self._reopening.done():
            self._reopening = asyncio.create_task(self._reopen(), name=f"beds-{self.name}-reopen")

    async def _reopen(self) -> None:
        """Stop (deliveries of the lost channel return to the queue) and start again.

        Retried with back-off until it consumes, the connection is gone (the node reconnects)
        or the node stops the pool (which cancels this task).
        """
        delay = 0.5
        while True:
            connection = self._connection
            await self.stop(0)
            if connection is None or connection.is_closed:
                return
            try:
                await self.start(connection)
            except AMQP_FAILURES as exc:
                logger.error(
                    "broker {} could not consume {} again ({!r}); trying again in {:g} s",
                    self.name,
                    self.queue,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.channels_reopened += 1
            self._reopening = None
            return

    # -- supervision ----------------------------------------------------------------------------

    async def _watch_budget(self) -> None:
        """Report messages past the handler budget; settle and stop those past budget + grace.

        One sweep every quarter budget over what the workers hold, rather than a timer per
        message: a timer on every request fills the event loop's heap (five seconds' worth of
        requests) and costs each of them a push and a cancel. A message that finishes late
        between two sweeps is reported when it finishes (:meth:`_work`).
        """
        while True:
            await asyncio.sleep(min(self.handler_budget, self.settle_limit) / 4)
            now = time.monotonic()
            for slot, message in list(self._holding.items()):
                age = now - self._taken_at[slot]
                if age > self.handler_budget and id(message) not in self._late:
                    self._report_late(message, age, "and still running")
                if age > self.settle_limit:
                    await self._stop_handler(slot, message, age)

    async def _stop_handler(self, slot: int, message: DeliveredMessage, age: float) -> None:
        """Settle a message held past budget + grace, then cancel the task holding it."""
        self.stopped += 1
        stopped = HandlerStopped(
            f"the handler ran past its budget and grace ({self.settle_limit:g} s) and was "
            "stopped; a write may have run: send it again with its idempotency key"
        )
        await self.settle.give_up(message, stopped, answer=True)
        logger.bind(event_id=event_id_of(message)).error(
            "broker {} stopped a handler after {:.1f} s (limit {:g} s); its request was "
            "dead-lettered ({})",
            self.name,
            age,
            self.settle_limit,
            HandlerStopped.CODE,
        )
        task = self._workers.get(slot)
        if task is not None and self._holding.get(slot) is message:
            self._late.discard(id(message))
            task.cancel()  # _on_worker_done replaces it; the message is settled already

    def _report_late(self, message: DeliveredMessage, age: float, state: str) -> None:
        """Count a message handled past the budget (once) and log it with its event id."""
        self._late.add(id(message))
        self.over_budget += 1
        request = request_of(message)
        event_id = request.meta.event_id if request is not None else ""
        what = f"{request.operation.value} {request.template}" if request else "undecodable"
        logger.bind(event_id=event_id).warning(
            "request {} ({}) is past its handler budget of {:g} s {} ({:.1f} s, broker {})",
            event_id or "?",
            what,
            self.handler_budget,
            state,
            age,
            self.name,
        )

    async def _on_message(self, message: DeliveredMessage) -> None:
        self.settle.received(delivery_tag(message))
        self._inbox.put_nowait(message)

    def _spawn(self, slot: int) -> None:
        task = asyncio.create_task(self._work(slot), name=f"beds-{self.name}-{slot}")
        self._workers[slot] = task
        task.add_done_callback(lambda done: self._on_worker_done(slot, done))

    def _on_worker_done(self, slot: int, task: asyncio.Task[None]) -> None:
        held = self._holding.pop(slot, None)
        if self._stopping or self._workers.get(slot) is not task:
            return
        self.replaced += 1
        if held is not None and self.settle.unsettled(held):
            reason = "cancelled" if task.cancelled() else repr(task.exception())
            logger.error("broker {} task {} died ({}); replacing it", self.name, slot, reason)
            asyncio.create_task(self.settle.requeue(held))  # noqa: RUF006 - ends on its own
        self._spawn(slot)

    async def _work(self, slot: int) -> None:
        while True:
            message = await self._inbox.get()
            self._holding[slot] = message
            self._taken_at[slot] = time.monotonic()
            try:
                await self._process(message)
            except Exception as exc:
                await self._failed(message, exc)
            # Not in a finally: a task that dies keeps its message for _on_worker_done.
            self._holding.pop(slot, None)
            age = time.monotonic() - self._taken_at[slot]
            if age > self.handler_budget and id(message) not in self._late:
                self._report_late(message, age, "and finished")
            self._late.discard(id(message))
            self.handled += 1
            if not self._holding and self._inbox.empty():
                self._idle.set()

    async def _failed(self, message: DeliveredMessage, exc: Exception) -> None:
        """The settle invariant's last line: processing raised, the delivery is still settled."""
        unsettled = self.settle.unsettled(message)
        report_bug(
            exc,
            "broker {} failed handling a message; {}",
            self.name,
            "dead-lettering it" if unsettled else "it was settled already",
            event_id=event_id_of(message),
        )
        if unsettled:
            failure = InternalError(
                "the node failed while handling the request; a write may have run: send it "
                "again with its idempotency key"
            )
            await self.settle.give_up(message, failure, answer=True)

    # -- one message ----------------------------------------------------------------------------

    async def _process(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        try:
            check_request_properties(properties)
        except MalformedRequest as refused:
            # No reply_to means nobody to answer; otherwise the caller learns why.
            answer = bool(safe_shortstr(properties.reply_to)) and not undecodable(message)
            await self.settle.give_up(message, refused, answer=answer)
            return
        if message.redelivered and self.count_redeliveries:
            await self.settle.count_redelivery(message, self.max_deliveries, route(message))
            return
        request, response = await self.dispatcher.handle(
            message.body,
            properties.content_type,
            route(message),
            (properties.headers or {}).get(CREDENTIAL_HEADER),
            origin_of(message, self.user),
        )
        body = encode_reply(response)
        if self.observer is not None:
            self.observer.dispatched(request, response)
        error = response.error
        if error is not None and RequestError.from_error(error).TRANSIENT:
            # Retried already (Dispatcher): the caller is told, and operators get a copy.
            try:
                await self.settle.dead_letter(message, RequestError.from_error(error))
            except AMQP_FAILURES as exc:
                logger.warning(
                    "broker {}: the copy of a failed request was not dead-lettered ({})",
                    self.name,
                    type(exc).__name__,
                )
        await self.replies.send(message, request, response, body)
