"""Long operations over HTTP: submit for a ticket, read it, stream it, cancel it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson


async def submit(edge: httpx.AsyncClient) -> str:
    reply = await edge.post("/v1/board/submit", json={"operation": "dump", "params": {}})
    assert reply.status_code == 202, reply.text
    ticket: str = reply.json()["data"]["ticket"]
    return ticket


async def run_tickets(caller: Any) -> None:
    while await caller.node.workers.run_one():
        pass


def events(body: str) -> list[tuple[str, Any]]:
    found = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], orjson.loads(fields["data"])))
    return found


async def test_submit_read_and_page_a_result(edge: httpx.AsyncClient, caller: Any) -> None:
    for text in ("a", "b", "c"):
        assert (await edge.post("/v1/board", json={"text": text})).status_code == 201
    ticket = await submit(edge)
    reply = await edge.get(f"/v1/tickets/{ticket}")
    assert reply.status_code == 200
    assert reply.json()["data"]["state"] == "queued"
    await run_tickets(caller)
    reply = await edge.get(f"/v1/tickets/{ticket}", params={"limit": "2"})
    assert reply.status_code == 200, reply.text
    page = reply.json()
    assert page["data"]["state"] == "succeeded"
    texts = [r["text"] for r in page["data"]["result"]]
    assert len(texts) == 2
    assert page["meta"]["next"] is not None
    reply = await edge.get(
        f"/v1/tickets/{ticket}", params={"limit": "2", "cursor": page["meta"]["next"]}
    )
    texts += [r["text"] for r in reply.json()["data"]["result"]]
    assert sorted(texts) == ["a", "b", "c"]
    # Finished: cancelling it is the node's BEDS-409F.
    reply = await edge.delete(f"/v1/tickets/{ticket}")
    assert (reply.status_code, reply.json()["code"]) == (409, "BEDS-409F")


async def test_cancel_a_queued_ticket(edge: httpx.AsyncClient) -> None:
    ticket = await submit(edge)
    reply = await edge.delete(f"/v1/tickets/{ticket}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["state"] == "cancelled"


async def test_ticket_events_until_it_finishes(app_with: Any, caller: Any) -> None:
    app = app_with(ticket_poll_seconds=0.02)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as edge:
        ticket = await submit(edge)
        # The stream ends once the ticket is finished; the workers run meanwhile.
        streaming = asyncio.ensure_future(edge.get(f"/v1/tickets/{ticket}/events"))
        await asyncio.sleep(0.1)
        await run_tickets(caller)
        reply = await asyncio.wait_for(streaming, 10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    states = [data["state"] for name, data in events(reply.text) if name == "ticket"]
    assert states[0] == "queued"
    assert states[-1] == "succeeded"


async def test_unknown_tickets_and_operations_are_the_nodes_errors(
    edge: httpx.AsyncClient,
) -> None:
    reply = await edge.get("/v1/tickets/01234567-89ab-4def-8123-456789abcdef")
    assert reply.status_code == 404
    assert reply.json()["code"].startswith("BEDS-404")
    reply = await edge.post("/v1/board/submit", json={"operation": "nope"})
    assert reply.status_code in (404, 405, 422)
    reply = await edge.post("/v1/board/submit", json={"params": {}})
    assert (reply.status_code, reply.json()["code"]) == (422, "BEDS-422")
    reply = await edge.get("/v1/tickets/01234567-89ab-4def-8123-456789abcdef?limit=x")
    assert (reply.status_code, reply.json()["code"]) == (422, "BEDS-422")
