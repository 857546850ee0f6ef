"""The peer of the HTTP benchmark: a plain Starlette app on asyncmy, straight to MariaDB.

What a user would write instead of BEDS + beds-http for the same routes: ``GET /home?viewer=H``
reads H's home timeline, the newest 50 posts from the view ``spew_post``'s ``home`` query reads
(``spp_home_v``, the same columns and order), ``GET /recent`` the newest 50 posts of
``spp_posts_v`` (``recent``), and ``POST /posts`` calls the same procedure (``spp_create``). No
auth, no validation beyond the body's two keys and the viewer's presence, no AMQP: the floor an
edge through BEDS is compared with (``benchmarks/http_edge.py``).

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

POST_COLUMNS = "id, author, body, parent_id, like_count, reply_count, created_at, updated_at"
"""The columns ``spew_post``'s ``recent`` and ``home`` queries read (``home`` adds
``liked_by_me``)."""


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

    async def rows(sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        async with state["pool"].acquire() as conn, conn.cursor(asyncmy.cursors.DictCursor) as cur:
            await cur.execute(sql, args)
            found: list[dict[str, Any]] = list(await cur.fetchall())
        for row in found:
            for key in ("created_at", "updated_at"):
                if row[key] is not None:
                    row[key] = row[key].isoformat() + "Z"
            if "liked_by_me" in row:
                row["liked_by_me"] = bool(row["liked_by_me"])
        return found

    async def recent(request: Request) -> Response:
        return json(await rows(f"SELECT {POST_COLUMNS} FROM spp_posts_v ORDER BY id DESC LIMIT 50"))

    async def home(request: Request) -> Response:
        viewer = request.query_params.get("viewer")
        if not viewer:
            return json({"error": "query parameter viewer is required"}, 400)
        sql = (
            f"SELECT {POST_COLUMNS}, liked_by_me FROM spp_home_v WHERE viewer = %s "
            "ORDER BY id DESC LIMIT 50"
        )
        return json(await rows(sql, (viewer,)))

    async def create(request: Request) -> Response:
        body = orjson.loads(await request.body())
        async with state["pool"].acquire() as conn, conn.cursor() as cur:
            await cur.execute("CALL spp_create(%s, %s, NULL)", (body["author"], body["body"]))
            row = await cur.fetchone()
            while await cur.nextset():
                pass
        return json({"id": row[0], "created_at": row[1].isoformat() + "Z"}, 201)

    return Starlette(
        routes=[
            Route("/home", home),
            Route("/recent", recent),
            Route("/posts", create, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    url, port, pool = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print("ready", flush=True)
    uvicorn.run(app(url, pool), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
