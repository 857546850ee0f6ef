"""The quick-start demo: start a node serving the SPEW example domain, then call it.

Run by ``./dev demo`` (``nox -s demo``) after ``beds schema apply``. It starts ``beds run`` with
the development default (local RabbitMQ and MariaDB, embedded MongoDB wire server), waits until
the node answers, performs CRUD on ``spew_post`` (MariaDB) and ``spew_profile`` (MongoDB)
through :class:`beds.client.BedsClient`, measures a short burst of requests, and stops the node
with SIGTERM. Exits non-zero if anything fails.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import sys
import time
import uuid
from typing import Any

import aiormq

from beds.client import BedsClient
from beds.errors import Conflict, ReplyTimeout, StaleVersion, Unauthenticated, ValidationFailed


def show(title: str, value: Any) -> None:
    print(f"  {title:<44} {json.dumps(value, default=str)}")


async def wait_ready(
    client: BedsClient, node: asyncio.subprocess.Process, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if node.returncode is not None:
            raise SystemExit(f"beds run exited with {node.returncode} before it was ready")
        try:
            if (await client.ping(timeout=1)).ok:
                return
        except (ReplyTimeout, Exception):
            await asyncio.sleep(0.5)
    raise SystemExit("the node did not answer within a minute")


async def burst(
    client: BedsClient, post_id: int, total: int, in_flight: int
) -> tuple[float, float, float]:
    latencies: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            started = time.perf_counter()
            await client.fetch("spew_post", "by_id", {"id": post_id})
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return total / elapsed, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


async def exercise(client: BedsClient) -> None:
    handle = f"demo_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex  # a demo account: nobody needs to know it
    print("\nidentity (beds-identity: users and sessions):")
    show(
        "sign up",
        await client.create("beds_user", {"handle": handle, "password": password}),
    )
    try:
        await client.create("spew_profile", {"handle": handle, "display_name": "Demo User"})
    except Unauthenticated as exc:
        show("write before logging in -> Unauthenticated", exc.to_error().code)
    login = await client.login(handle, password)
    show("log in", {"session": login["session"], "expires_at": login["expires_at"]})

    print("\nspew_profile (REC, MongoDB), as the logged-in user:")
    show(
        "create",
        await client.create("spew_profile", {"handle": handle, "display_name": "Demo User"}),
    )
    show("fetch by_handle", await client.fetch("spew_profile", "by_handle", {"handle": handle}))
    show(
        "update bio",
        await client.update("spew_profile", {"handle": handle, "bio": "hello from BEDS"}),
    )
    try:
        await client.create("spew_profile", {"handle": handle, "display_name": "Again"})
    except Conflict as exc:
        show("create the same handle again -> Conflict", exc.to_error().code)

    print("\nspew_post (REL, MariaDB stored procedures):")
    post = await client.create("spew_post", {"body": "My first spew."})  # author: the login
    show("create", post)
    show("fetch by_id", await client.fetch("spew_post", "by_id", {"id": post["id"]}))
    show("update", await client.update("spew_post", {"id": post["id"], "body": "Edited spew."}))
    await client.create("spew_post", {"body": "Second spew."})
    show(
        "fetch by_author (limit 5)",
        await client.fetch("spew_post", "by_author", {"author": handle}, limit=5),
    )
    show("count_by_author", await client.fetch("spew_post", "count_by_author", {"author": handle}))
    try:
        await client.create("spew_post", {"body": "x" * 281})
    except ValidationFailed as exc:
        show("281-character body -> ValidationFailed", list(exc.details))

    print("\nspew_note (REL: optimistic locking, journal, pages with cursors):")
    note = await client.create("spew_note", {"body": "Buy milk."})
    show("create", {"id": note["id"], "version": note["version"]})
    first = {"id": note["id"], "version": note["version"]}
    changed = await client.update("spew_note", {**first, "body": "Buy oat milk."})
    show("update at version 1", {"id": changed["id"], "version": changed["version"]})
    try:
        await client.update("spew_note", {**first, "body": "a lost update"})
    except StaleVersion as exc:
        show("update at version 1 again -> StaleVersion", list(exc.details))
    for number in range(3):
        await client.create("spew_note", {"body": f"Note {number}."})
    page = await client.call("spew_note", "fetch", {"query": "mine", "limit": 2})
    show("mine, page 1 (limit 2)", [row["body"] for row in page.data or []])
    page = await client.call(
        "spew_note", "fetch", {"query": "mine", "limit": 2, "cursor": page.meta.next}
    )
    show("mine, page 2 (cursor = meta.next)", [row["body"] for row in page.data or []])
    history = await client.fetch("spew_note", "history", {"id": note["id"]})
    show("history", [f"{entry['operation']} by {entry['principal']}" for entry in history])

    print("\nspew_stats (CALGON: a long aggregation run in the background, polled by ticket):")
    ticket = await client.submit("spew_stats", "daily", {})  # every param has a default
    show("submit -> ticket", {"ticket": ticket.id, "state": ticket.state})
    seen: list[float] = []
    daily = await ticket.result(poll=0.1, on_progress=lambda progress, _: seen.append(progress))
    show("progress while polled", seen)
    mine = [row for row in daily if row["author"] == handle]
    show("result: my posts per day", mine)

    print("\nthroughput (spew_post fetch by_id through RabbitMQ, one client connection):")
    rate, p50, p99 = await burst(client, post["id"], total=3000, in_flight=16)
    show("3000 requests, 16 in flight", f"{rate:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")

    print("\ncleanup:")
    show("delete post", await client.delete("spew_post", {"id": post["id"]}))
    show("delete profile", await client.delete("spew_profile", {"handle": handle}))
    notes = await client.fetch("spew_note", "mine", {}, limit=50)
    for row in notes:
        await client.delete("spew_note", {"id": row["id"], "version": row["version"]})
    show("delete notes", len(notes))
    await client.logout()
    try:
        await client.update(
            "spew_post", {"id": post["id"], "body": "after logout"}, token=login["token"]
        )
    except Unauthenticated as exc:
        show("the old token after logging out -> Unauthenticated", exc.to_error().code)


LOGS_QUEUE = "beds.dev.admin.adminLogsBroker"
"""The development default's logs queue (environment ``dev``, seed admin role)."""


async def main() -> int:
    print("starting `beds run` (development default: appServer on local RabbitMQ/MariaDB)...")
    node = await asyncio.create_subprocess_exec(sys.executable, "-m", "beds", "run")
    try:
        async with BedsClient(origin="demo", timeout=10) as client:
            await wait_ready(client, node)
            print("node is ready (ping answered)")
            await exercise(client)
    finally:
        node.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(node.wait(), 30)
        print(f"\n`beds run` stopped on SIGTERM with exit code {code}")
    await empty_logs_queue()
    return 0 if code == 0 else 1


async def empty_logs_queue() -> None:
    """Drop the lineage events and audit records the node left for an admin node.

    Every node declares the admin role's logs queue, so that what it publishes waits there for
    an admin node to store (``beds run --node admin``); this demo runs none, so it leaves none.
    """
    connection = await aiormq.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        purged = await channel.queue_purge(LOGS_QUEUE)
        print(f"emptied {LOGS_QUEUE}: {purged.message_count} batches of events (no admin node ran)")
    finally:
        await connection.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
