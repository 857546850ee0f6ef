"""SPEW as a product, through RabbitMQ and a node in this process, from its declarations alone.

Two members sign up and log in (beds-identity), follow, post, reply, like, read their home
timelines page by page, search a hashtag, delete, and unfollow, each with their own token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from beds.client import BedsClient
from beds.config import load_config
from beds.envelopes import Operation, Response
from beds.node import BedsNode
from beds.testing import unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb, pytest.mark.mongodb]

PASSWORD = "Tr0ub4dor&3-spew"


@pytest.fixture
async def client(node_config: Path) -> AsyncIterator[BedsClient]:
    config = load_config(node_config, environ={})
    async with (
        BedsNode(config),
        BedsClient(
            config.amqp.url,
            exchange=config.amqp.events_exchange,
            env=config.node.env,
            origin="e2e",
            timeout=15,
        ) as anonymous,
    ):
        yield anonymous


class Member:
    """One signed-up member: calls carry their token."""

    def __init__(self, client: BedsClient, handle: str, token: str) -> None:
        self.client, self.handle, self.token = client, handle, token

    async def call(self, template: str, operation: str, payload: dict[str, Any]) -> Response:
        return await self.client.call(template, Operation(operation), payload, token=self.token)

    async def ok(self, template: str, operation: str, payload: dict[str, Any]) -> Any:
        response = await self.call(template, operation, payload)
        assert response.ok, response.error
        return response.data

    async def fetch(self, template: str, query: str, **params: Any) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = await self.ok(
            template, "fetch", {"query": query, "params": params}
        )
        return data

    async def pages(self, template: str, query: str, limit: int, **params: Any) -> list[list[Any]]:
        """Every page of a query, following meta.next; each page as its records' ids."""
        pages: list[list[Any]] = []
        payload: dict[str, Any] = {"query": query, "params": params, "limit": limit}
        while True:
            response = await self.call(template, "fetch", payload)
            assert response.ok, response.error
            pages.append([row["id"] for row in response.data])
            if response.meta.next is None:
                return pages
            payload = {**payload, "cursor": response.meta.next}


async def sign_up(client: BedsClient) -> Member:
    handle = unique_name("m")[:20]
    credentials = {"handle": handle, "password": PASSWORD}
    signed_up = await client.call("beds_user", Operation.CREATE, credentials)
    assert signed_up.ok, signed_up.error
    logged_in = await client.call("beds_session", Operation.CREATE, credentials)
    assert logged_in.ok, logged_in.error
    return Member(client, handle, str(logged_in.data["token"]))


def code(response: Response) -> str:
    return response.error.code if response.error is not None else ""


async def test_two_members_follow_post_reply_like_read_search_and_delete(
    client: BedsClient,
) -> None:
    ann, bob = await sign_up(client), await sign_up(client)
    tag = unique_name("t").replace("-", "_")[:30]

    # Follow, twice: one follow (sign-up gave both the member role the writes need).
    for _ in range(2):
        followed = await ann.ok("spew_follow", "create", {"followee": bob.handle})
        assert (followed["follower"], followed["followee"]) == (ann.handle, bob.handle)
    assert [r["followee"] for r in await ann.fetch("spew_follow", "following")] == [bob.handle]
    assert await ann.fetch("spew_follow", "follower_count", followee=bob.handle) == [
        {"follower_count": 1}
    ]
    assert code(await ann.call("spew_follow", "create", {"followee": ann.handle})) == "BEDS-409"

    # Posts; a reply; a reply to a post that does not exist is refused by the procedure.
    first = await bob.ok("spew_post", "create", {"body": f"hello #{tag} 🎉"})
    mine = await ann.ok("spew_post", "create", {"body": "ann's own"})
    reply = await ann.ok("spew_post", "create", {"body": "welcome!", "parent_id": first["id"]})
    later = await bob.ok("spew_post", "create", {"body": f"again #{tag.upper()}"})
    ghost = await ann.call("spew_post", "create", {"body": "to nobody", "parent_id": 2**62})
    assert code(ghost) == "BEDS-409"
    assert ghost.error is not None
    assert "parent_id" in ghost.error.details[0]
    replies = await ann.fetch("spew_post", "replies", parent_id=first["id"])
    assert [(r["id"], r["author"]) for r in replies] == [(reply["id"], ann.handle)]

    # Likes: twice is one like.
    for _ in range(2):
        await ann.ok("spew_like", "create", {"post_id": first["id"]})
    assert await ann.fetch("spew_like", "count_by_post", post_id=first["id"]) == [{"like_count": 1}]
    assert code(await ann.call("spew_like", "create", {"post_id": 2**62})) == "BEDS-409"
    [post] = await ann.fetch("spew_post", "by_id", id=first["id"])
    assert (post["like_count"], post["reply_count"], post["body"]) == (1, 1, f"hello #{tag} 🎉")

    # Home timelines, newest first, two per page: ann sees bob's posts and her own.
    expected = [later["id"], reply["id"], mine["id"], first["id"]]
    assert await ann.pages("spew_post", "home", 2) == [expected[:2], expected[2:]]
    home = {row["id"]: row for row in await ann.fetch("spew_post", "home")}
    assert home[first["id"]]["liked_by_me"] is True
    assert home[later["id"]]["liked_by_me"] is False
    assert await bob.pages("spew_post", "home", 2) == [[later["id"], first["id"]]]
    assert (
        code(
            await ann.call(
                "spew_post", "fetch", {"query": "home", "params": {"viewer": bob.handle}}
            )
        )
        == "BEDS-403"
    )
    anonymous = await client.call("spew_post", Operation.FETCH, {"query": "home", "params": {}})
    assert code(anonymous) == "BEDS-401"
    assert await ann.pages("spew_post", "by_author", 1, author=bob.handle) == [
        [later["id"]],
        [first["id"]],
    ]

    # Search: the hashtag, in any case.
    found = await ann.pages("spew_post", "by_hashtag", 50, tag=tag.upper())
    assert found == [[later["id"], first["id"]]]

    # Delete: one's own post, never another's.
    refused = await ann.call("spew_post", "delete", {"id": first["id"]})
    assert code(refused) == "BEDS-403"
    assert await ann.ok("spew_post", "delete", {"id": mine["id"]}) == {"deleted": 1}
    assert await ann.fetch("spew_post", "by_id", id=mine["id"]) == []

    # Unlike and unfollow: bob's posts leave ann's home timeline.
    assert await ann.ok("spew_like", "delete", {"post_id": first["id"]}) == {"deleted": 1}
    assert code(await ann.call("spew_like", "delete", {"post_id": first["id"]})) == "BEDS-404"
    assert await ann.ok("spew_follow", "delete", {"followee": bob.handle}) == {"deleted": 1}
    assert await ann.fetch("spew_follow", "following") == []
    assert await ann.pages("spew_post", "home", 50) == [[reply["id"]]]
