"""Ceilings 1 and 3: a minimal aiormq request/reply server, no framework.

``--work echo`` answers every request with its own body (the AMQP ceiling). Any store
operation (``rel_fetch`` ...) makes it the ideal pipeline: the handler decodes the JSON body,
calls the store by hand (:mod:`benchmarks.work`) and replies with the JSON result.

Layout: ``--consumers`` channels, each with ``basic.qos(prefetch)`` and one consumer on the
queue; aiormq runs each delivery as a task, so up to consumers x prefetch requests are handled
at once. Replies go to the direct reply-to address; each request is acknowledged after its
reply is published (manual acks).

Unbatched (the default), it uses aiormq as it comes: the reply channel has publisher confirms
(aiormq's default), each request is acked after its reply's confirm, and every publish and every
ack is its own socket write. ``--batched`` is the best hand-written aiormq found: the channel has
no publisher confirms, and the replies and acks of one loop turn are written as one chunk, with
the acks coalesced (:mod:`benchmarks.batching`). BEDS's node answers this way, so the batched
server is the ceiling its targets are measured against.

``--durable`` declares the queue durable and not auto-deleted, as BEDS declares its broker
queues (the confirmed echo's ceiling, whose client publishes as ``BedsClient`` does); what an
earlier server left in it is purged at start. ``--topic EXCHANGE`` also binds the queue to that
durable topic exchange with a wildcard pattern (``TOPIC_BINDING``), so that requests can reach
it the way BEDS routes them: through a topic exchange, by routing key.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

import aiormq
import orjson
from pamqp.commands import Basic

from benchmarks.batching import TurnWriter
from benchmarks.work import Store, run

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage


TOPIC_BINDING = "*.echo.#"
"""The pattern ``--topic`` binds with (BEDS binds ``<template>.<broker>.#``-like patterns)."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", default="bench.echo")
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--work", default="echo")
    parser.add_argument("--mysql-url", default="")
    parser.add_argument("--mongo-uri", default="")
    parser.add_argument("--mongo-db", default="")
    parser.add_argument("--pool", type=int, default=16)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--durable", action="store_true", help="a durable queue, as BEDS's")
    parser.add_argument("--topic", default="", help="also bind the queue to this topic exchange")
    parser.add_argument(
        "--batched", action="store_true", help="no confirms; one write per loop turn"
    )
    return parser.parse_args(argv)


async def serve(options: argparse.Namespace) -> None:
    store = None
    if options.work != "echo":
        store = Store(
            options.work,
            mysql_url=options.mysql_url,
            mongo_uri=options.mongo_uri,
            mongo_db=options.mongo_db,
            pool=options.pool,
        )
        await store.open()
    connection = await aiormq.connect(options.url)
    setup = await connection.channel()
    if options.durable:
        await setup.queue_declare(options.queue, durable=True)
        await setup.queue_purge(options.queue)
    else:
        await setup.queue_declare(options.queue, auto_delete=True)
    if options.topic:
        await setup.exchange_declare(options.topic, exchange_type="topic", durable=True)
        await setup.queue_bind(options.queue, options.topic, routing_key=TOPIC_BINDING)
    await setup.close()

    async def answer(body: bytes) -> bytes:
        if store is None:
            return body
        try:
            return orjson.dumps({"ok": True, "data": await store(orjson.loads(body))})
        except Exception as exc:
            return orjson.dumps({"ok": False, "error": repr(exc)})

    def handler(channel: aiormq.abc.AbstractChannel) -> Any:
        async def on_message(message: DeliveredMessage) -> None:
            properties = message.header.properties
            await channel.basic_publish(
                await answer(message.body),
                exchange="",
                routing_key=properties.reply_to or "",
                properties=Basic.Properties(
                    correlation_id=properties.correlation_id, content_type="application/json"
                ),
            )
            await channel.basic_ack(message.delivery_tag or 0)

        return on_message

    def batched_handler(writer: TurnWriter) -> Any:
        async def handle(message: DeliveredMessage) -> None:
            properties = message.header.properties
            writer.publish(
                await answer(message.body),
                routing_key=properties.reply_to or "",
                correlation_id=properties.correlation_id or "",
            )
            writer.ack(message.delivery_tag or 0)

        def on_message(message: DeliveredMessage) -> Any:
            # aiormq calls this as the delivery arrives and runs the coroutine as a task, so
            # the tag is noted before any later delivery can be acked.
            writer.delivered(message.delivery_tag or 0)
            return handle(message)

        return on_message

    writers: list[TurnWriter] = []
    for _ in range(options.consumers):
        channel = await connection.channel(publisher_confirms=not options.batched)
        await channel.basic_qos(prefetch_count=options.prefetch)
        if options.batched:
            writers.append(TurnWriter(channel))
            await channel.basic_consume(options.queue, batched_handler(writers[-1]))
        else:
            await channel.basic_consume(options.queue, handler(channel))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for writer in writers:
        await writer.close()
    await connection.close()
    if store is not None:
        await store.close()


def main() -> None:
    options = parse(sys.argv[1:])
    run(serve(options), use_uvloop=options.uvloop)


if __name__ == "__main__":
    main()
