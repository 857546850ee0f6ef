"""The peer of the HTTP benchmark: a plain Starlette app on asyncmy, straight to MariaDB.

What a user would write instead of BEDS + beds-http for the same two routes: ``GET /recent``
reads the newest 50 posts from the same view the SPEW template reads (``spp_posts_v``), and
``POST /posts`` calls the same procedure (``spp_create``). No auth, no validation beyond the
body's two keys, no AMQP: the floor an edge through BEDS is compared with.

    python -m benchmarks.peers.http_mariadb MYSQL_URL PORT POOL
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

import asyncmy
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.work import mysql_kwargs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request


def app(url: str, pool_size: int) -> Starlette:
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        kwargs = mysql_kwargs(url)
        kwargs.pop("init_command", None)
        state["pool"] = await asyncmy.create_pool(minsize=1, maxsize=pool_size, **kwargs)
        try:
            yield
        finally:
            state["pool"].close()
            await state["pool"].wait_closed()

    def json(data: Any, status: int = 200) -> Response:
        return Response(
            orjson.dumps({"data": data}), status_code=status, media_type="application/json"
        )

    async def recent(request: Request) -> Response:
        async with state["pool"].acquire() as conn, conn.cursor(asyncmy.cursors.DictCursor) as cur:
            await cur.execute(
                "SELECT id, author, body, created_at, updated_at FROM spp_posts_v "
                "ORDER BY id DESC LIMIT 50"
            )
            rows = await cur.fetchall()
        for row in rows:
            for key in ("created_at", "updated_at"):
                if row[key] is not None:
                    row[key] = row[key].isoformat() + "Z"
        return json(rows)

    async def create(request: Request) -> Response:
        body = orjson.loads(await request.body())
        async with state["pool"].acquire() as conn, conn.cursor() as cur:
            await cur.execute("CALL spp_create(%s, %s, NULL)", (body["author"], body["body"]))
            row = await cur.fetchone()
            while await cur.nextset():
                pass
        return json({"id": row[0], "created_at": row[1].isoformat() + "Z"}, 201)

    return Starlette(
        routes=[Route("/recent", recent), Route("/posts", create, methods=["POST"])],
        lifespan=lifespan,
    )


def main() -> None:
    url, port, pool = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    uvicorn.run(app(url, pool), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
