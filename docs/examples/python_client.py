"""Call the SPEW example domain from Python through BedsClient (quick start)."""

from __future__ import annotations

import asyncio
import os

from beds.client import BedsClient
from beds.errors import ValidationFailed

AMQP_URL = os.environ.get("BEDS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def main() -> None:
    """Ping the node, then create, fetch, update and delete a post."""
    async with BedsClient(AMQP_URL, origin="quickstart", timeout=10) as client:
        print((await client.ping()).data)  # {'pong': '<node name>'}

        post = await client.create("spew_post", {"author": "ann", "body": "hi"})
        print(post)  # {'id': 1, 'created_at': '2026-…Z'}

        posts = await client.fetch("spew_post", "by_author", {"author": "ann"}, limit=5)
        print(posts)  # [{'id': 1, 'author': 'ann', 'body': 'hi', ...}]

        print(await client.update("spew_post", {"id": post["id"], "body": "edited"}))
        print(await client.fetch("spew_post", "count_by_author", {"author": "ann"}))

        try:
            await client.create("spew_post", {"author": "ann", "body": "x" * 281})
        except ValidationFailed as exc:  # the error reply, raised as its exception class
            print(exc.CODE, exc.details)

        print(await client.delete("spew_post", {"id": post["id"]}))  # {'deleted': 1}


if __name__ == "__main__":
    asyncio.run(main())
