"""Call BEDS with nothing but an AMQP 0-9-1 library and JSON: no BEDS import.

The same steps work from any language: publish a JSON request to the ``beds.events`` exchange
with the routing key ``{template}.{class}``, ask for the reply on RabbitMQ's direct reply-to
pseudo-queue, and match the reply by its correlation id.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import aiormq
from pamqp.commands import Basic

AMQP_URL = os.environ.get("BEDS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REPLY_TO = "amq.rabbitmq.reply-to"  # RabbitMQ direct reply-to
CLASS = {  # operation -> routing-key class
    "fetch": "read",
    "ticket": "read",
    "ping": "read",
    "create": "write",
    "update": "write",
    "delete": "write",
    "submit": "meta",
}


async def main() -> None:
    """Ping the node, then create, fetch and delete a post through plain AMQP."""
    connection = await aiormq.connect(AMQP_URL)
    # Publisher confirms + mandatory: an unroutable request comes back as an error at once.
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def on_reply(message: aiormq.abc.DeliveredMessage) -> None:
        future = waiting.pop(message.header.properties.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(json.loads(message.body))

    # Consume the pseudo-queue with no-ack *before* publishing, on the same channel.
    await channel.basic_consume(REPLY_TO, on_reply, no_ack=True)

    async def call(
        template: str, operation: str, payload: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        correlation_id = uuid.uuid4().hex
        request = {
            "version": 1,
            "operation": operation,
            "template": template,
            "payload": payload,
            "meta": {
                "correlation_id": correlation_id,
                "origin": "wire-example",
                "deadline": time.time() + timeout,  # not executed after this
            },
        }
        future = asyncio.get_running_loop().create_future()
        waiting[correlation_id] = future
        await channel.basic_publish(
            json.dumps(request).encode(),
            exchange="beds.events",
            routing_key=f"{template}.{CLASS[operation]}",
            mandatory=True,
            properties=Basic.Properties(
                content_type="application/json",
                correlation_id=correlation_id,
                reply_to=REPLY_TO,
                message_id=correlation_id,
                expiration=str(int(timeout * 1000)),  # milliseconds, as text
            ),
        )
        return await asyncio.wait_for(future, timeout)

    print(await call("beds", "ping", {}))
    created = await call("spew_post", "create", {"author": "ann", "body": "hi"})
    print(created)
    post_id = created["data"]["id"]
    print(await call("spew_post", "fetch", {"query": "by_id", "params": {"id": post_id}}))
    print(await call("spew_post", "delete", {"id": post_id}))
    await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
