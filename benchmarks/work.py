"""The work every scenario does, written once: request bodies and the hand-written store calls.

The database ceiling, the ideal pipeline and the peers' REL handlers all call the same SQL that
the REL adapter runs for the example domain (``spp_create``, the ``spp_posts_v`` view), and the
same MongoDB operations the REC adapter runs for ``spew_profile``; BEDS runs them through its
templates. Nothing here imports BEDS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

import orjson

if TYPE_CHECKING:
    import random

SEED_POSTS: Final = 1000
"""Posts created before the runs: ids 1..SEED_POSTS exist in a fresh database."""
SEED_PROFILES: Final = 1000
"""Profiles ``seed_0`` .. ``seed_999`` exist before the runs."""

OPERATIONS: Final = ("echo", "ping", "rel_fetch", "rel_create", "rec_fetch", "rec_create")

# About 200 bytes of JSON, the request size the issue asks for.
ECHO_PAYLOAD: Final[dict[str, Any]] = {
    "kind": "bench.echo",
    "user": "bench_user_0001",
    "tags": ["alpha", "beta", "gamma"],
    "text": "The quick brown fox jumps over the lazy dog; " * 2 + "0123456789abcdef",
    "n": 42,
}
ECHO_BODY: Final = orjson.dumps(ECHO_PAYLOAD)

POST_TEXT: Final = "Benchmark post: " + "lorem ipsum dolor sit amet " * 4
BIO_TEXT: Final = "Benchmark profile bio, " + "consectetur adipiscing " * 3

# The statements the REL adapter compiles for spew_post (beds_rel.bindings), written out by hand
# (tests/test_bench_statements.py checks they still are: a ceiling that reads fewer columns
# than BEDS skips the view's two counting subqueries and does less work in MariaDB).
POST_COLUMNS: Final = (
    "`id`, `author`, `body`, `parent_id`, `like_count`, `reply_count`, `created_at`, `updated_at`"
)
"""``spew_post``'s ``by_id`` columns: ``like_count`` and ``reply_count`` are counted by the view."""
REL_FETCH_SQL: Final = f"SELECT {POST_COLUMNS} FROM `spp_posts_v` WHERE `id` <=> %s LIMIT %s"
REL_CREATE_SQL: Final = "CALL `spp_create`(%s, %s, NULL)"
"""A post with no parent (``parent_id`` NULL): what ``spew_post`` create sends."""
REC_COLLECTION: Final = "spf_profiles"
REC_FETCH_PROJECTION: Final = {
    "_id": 1,
    "handle": 1,
    "display_name": 1,
    "bio": 1,
    "created_at": 1,
}


def make_args(operation: str, rng: random.Random) -> dict[str, Any]:
    """The parameters of one request of ``operation`` (fresh keys for creates)."""
    if operation == "rel_fetch":
        return {"id": rng.randint(1, SEED_POSTS)}
    if operation == "rel_create":
        return {"author": "bench_author", "body": POST_TEXT}
    if operation == "rec_fetch":
        return {"handle": f"seed_{rng.randrange(SEED_PROFILES)}"}
    if operation == "rec_create":
        return {
            "handle": "b" + uuid.uuid4().hex[:24],
            "display_name": "Bench User",
            "bio": BIO_TEXT,
        }
    return dict(ECHO_PAYLOAD)


def mysql_kwargs(url: str, *, with_database: bool = True) -> dict[str, Any]:
    """asyncmy/PyMySQL connection arguments from ``mysql://user:pw@host:port/db``."""
    parts = urlsplit(url)
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "charset": "utf8mb4",
        "autocommit": True,
        "init_command": "SET time_zone = '+00:00'",
    }
    database = parts.path.removeprefix("/")
    if with_database and database:
        kwargs["database"] = database
    return kwargs


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Date-times as ISO text, as BEDS puts them on the wire."""
    return {
        key: value.isoformat() if isinstance(value, dt.datetime) else value
        for key, value in row.items()
    }


class RelWork:
    """spew_post's create and fetch-by-id through an asyncmy pool (no framework)."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        import asyncmy

        self._pool = await asyncmy.create_pool(
            minsize=1, maxsize=self.pool_size, **mysql_kwargs(self.url)
        )

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()

    async def _rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        from asyncmy.cursors import DictCursor

        async with self._pool.acquire() as conn:
            cursor = conn.cursor(DictCursor)
            await cursor.execute(sql, args)
            rows: list[dict[str, Any]] = list(await cursor.fetchall()) if cursor.description else []
            while await cursor.nextset():
                pass
            await cursor.close()
            return rows

    async def fetch(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        rows = await self._rows(REL_FETCH_SQL, (args["id"], 1))
        return [jsonable(row) for row in rows]

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        rows = await self._rows(REL_CREATE_SQL, (args["author"], args["body"]))
        return jsonable(rows[0])


class RecWork:
    """spew_profile's create and fetch-by-handle through AsyncMongoClient (no framework)."""

    def __init__(self, uri: str, database: str) -> None:
        self.uri = uri
        self.database = database
        self._client: Any = None
        self._collection: Any = None

    async def open(self) -> None:
        from bson.codec_options import CodecOptions
        from pymongo import AsyncMongoClient

        self._client = AsyncMongoClient(self.uri, appname="beds-bench")
        await self._client.admin.command("ping")
        options: CodecOptions[dict[str, Any]] = CodecOptions(
            document_class=dict, tz_aware=True, tzinfo=dt.UTC
        )
        database = self._client.get_database(self.database, codec_options=options)
        self._collection = database[REC_COLLECTION]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def fetch(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self._collection.find({"handle": args["handle"]}, REC_FETCH_PROJECTION, limit=1)
        documents: list[dict[str, Any]] = await cursor.to_list()
        return [jsonable({**doc, "_id": str(doc["_id"])}) for doc in documents]

    async def create(self, args: dict[str, Any]) -> dict[str, Any]:
        document = {**args, "created_at": dt.datetime.now(dt.UTC)}
        result = await self._collection.insert_one(document)
        return jsonable(
            {
                "id": str(result.inserted_id),
                "handle": args["handle"],
                "created_at": document["created_at"],
            }
        )


class Store:
    """One store operation by name (``rel_fetch`` ...), for the ceilings and the pipeline."""

    def __init__(
        self, operation: str, *, mysql_url: str, mongo_uri: str, mongo_db: str, pool: int
    ) -> None:
        self.operation = operation
        self.rel = RelWork(mysql_url, pool) if operation.startswith("rel_") else None
        self.rec = RecWork(mongo_uri, mongo_db) if operation.startswith("rec_") else None

    async def open(self) -> None:
        for work in (self.rel, self.rec):
            if work is not None:
                await work.open()

    async def close(self) -> None:
        for work in (self.rel, self.rec):
            if work is not None:
                await work.close()

    async def __call__(self, args: dict[str, Any]) -> Any:
        work: RelWork | RecWork | None = self.rel or self.rec
        if work is None:
            raise ValueError(f"{self.operation} is not a store operation")
        if self.operation.endswith("_fetch"):
            rows = await work.fetch(args)
            if len(rows) != 1:
                raise LookupError(f"{self.operation} found {len(rows)} records")
            return rows
        return await work.create(args)


def run(main: Any, *, use_uvloop: bool = False) -> Any:
    """``asyncio.run`` on the default loop or on uvloop."""
    if use_uvloop:
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
