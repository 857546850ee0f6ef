"""Peer: a Nameko RPC service (eventlet) serving the echo and the REL fetch.

Run by ``nameko run --config CONFIG benchmarks.servers.nameko_service``; CONFIG gives
``AMQP_URI``, ``max_workers`` (Nameko's concurrency and prefetch), ``BENCH_MYSQL_URL`` and
``BENCH_POOL``. The REL fetch runs the same SQL as every other scenario through PyMySQL, which
eventlet's monkey patching makes cooperative, with a small connection pool.
"""

from __future__ import annotations

from typing import Any

import eventlet.queue
import pymysql
import pymysql.cursors
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc

from benchmarks.work import REL_FETCH_SQL, jsonable, mysql_kwargs


class MysqlPool(DependencyProvider):  # type: ignore[misc]
    """A fixed pool of PyMySQL connections shared by the service's workers."""

    def setup(self) -> None:
        config = self.container.config
        self.kwargs = mysql_kwargs(config["BENCH_MYSQL_URL"])
        self.idle: eventlet.queue.LightQueue = eventlet.queue.LightQueue()
        for _ in range(int(config.get("BENCH_POOL", 16))):
            self.idle.put(None)

    def get_dependency(self, worker_ctx: Any) -> MysqlPool:
        return self

    def fetch(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        conn = self.idle.get() or pymysql.connect(
            cursorclass=pymysql.cursors.DictCursor, **self.kwargs
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(REL_FETCH_SQL, (args["id"], 1))
                rows = [jsonable(row) for row in cursor.fetchall()]
        except BaseException:
            conn.close()
            self.idle.put(None)
            raise
        self.idle.put(conn)
        return rows


class Bench:
    name = "bench"
    db = MysqlPool()

    @rpc  # type: ignore[untyped-decorator]
    def echo(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    @rpc  # type: ignore[untyped-decorator]
    def rel_fetch(self, args: dict[str, Any]) -> dict[str, Any]:
        rows = self.db.fetch(args)
        if len(rows) != 1:
            return {"ok": False, "error": f"found {len(rows)} records"}
        return {"ok": True, "data": rows}
