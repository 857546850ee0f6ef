"""Identity end to end: users, sessions, tokens and revocation across two nodes, on real services.

Two nodes serve one environment (in this process, so the test can ask each one's authenticator
directly how long a revocation took to reach it). Passwords are hashed with the cheapest argon2id
parameters (the config's ``[auth.passwords]``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiormq
import orjson
import pytest
from loguru import logger
from pamqp.commands import Basic

from beds.auth import bearer
from beds.client import BedsClient
from beds.config import Config, load_config
from beds.errors import Unauthenticated
from beds.node import BedsNode
from beds.testing import TestIdentity, unique_name
from beds.transport.amqp import dead_letter_queue
from tests.helpers import Figures

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb, pytest.mark.mongodb, pytest.mark.slow]

PASSWORD = "Tr0ub4dor&3-e2e"
REVOCATION_BOUND = 5.0


def handle() -> str:
    return unique_name("u")[:20]


def configs(node_config: Path) -> tuple[Config, Config]:
    text = node_config.read_text(encoding="utf-8")
    # Few failures before throttling, so the flood test reaches it at once.
    node_config.write_text(text + "\n[auth.throttle]\nattempts = 3\n", encoding="utf-8")
    return (
        load_config(node_config, environ={"BEDS__NODE__NAME": "id1"}),
        load_config(node_config, environ={"BEDS__NODE__NAME": "id2"}),
    )


@pytest.fixture
async def two_nodes(node_config: Path) -> AsyncIterator[tuple[BedsNode, BedsNode]]:
    first, second = configs(node_config)
    async with BedsNode(first) as one, BedsNode(second) as two:
        yield one, two


@pytest.fixture
async def client(two_nodes: tuple[BedsNode, BedsNode]) -> AsyncIterator[BedsClient]:
    config = two_nodes[0].config
    async with BedsClient(
        config.amqp.url,
        exchange=config.amqp.events_exchange,
        env=config.node.env,
        origin="e2e",
        timeout=15,
    ) as c:
        yield c


async def sign_up_and_log_in(client: BedsClient, name: str) -> str:
    created = await client.call("beds_user", "create", {"handle": name, "password": PASSWORD})
    assert created.ok, created.error
    login = await client.call("beds_session", "create", {"handle": name, "password": PASSWORD})
    assert login.ok, login.error
    return str(login.data["token"])


def code(response: Any) -> str:
    return response.error.code if response.error is not None else ""


async def revoked_after(node: BedsNode, token: str, started: float) -> float:
    """Seconds from ``started`` until ``node`` refuses ``token`` (fails past the bound)."""
    authenticator = node.ipl.authenticator
    assert authenticator is not None
    while time.monotonic() - started < REVOCATION_BOUND:
        try:
            authenticator.authenticate(bearer(token))
        except Unauthenticated:
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise AssertionError(f"{node.config.node.name} still accepts the token after the bound")


async def test_a_newcomer_signs_up_posts_and_logs_out_on_every_node(
    two_nodes: tuple[BedsNode, BedsNode], client: BedsClient, figures: Figures
) -> None:
    ann, bob = handle(), handle()
    ann_token = await sign_up_and_log_in(client, ann)
    bob_token = await sign_up_and_log_in(client, bob)

    post = await client.call("spew_post", "create", {"body": "hello"}, token=ann_token)
    assert post.ok, post.error
    found = await client.fetch("spew_post", "by_id", {"id": post.data["id"]})
    assert found[0]["author"] == ann  # bound to the logged-in handle, not sent

    mine = await client.call("spew_post", "fetch", {"query": "mine"}, token=bob_token)
    assert mine.ok, mine.error
    assert mine.data == []  # bob's own posts: the author param is bound to the caller
    ann_posts = await client.call("spew_post", "fetch", {"query": "mine"}, token=ann_token)
    assert [row["id"] for row in ann_posts.data] == [post.data["id"]]
    nobody = await client.call("spew_post", "fetch", {"query": "mine"})
    assert code(nobody) == "BEDS-401"
    chosen = await client.call(
        "spew_post", "fetch", {"query": "mine", "params": {"author": ann}}, token=bob_token
    )
    assert code(chosen) == "BEDS-403"

    stolen = await client.call(
        "spew_post", "update", {"id": post.data["id"], "body": "mine now"}, token=bob_token
    )
    assert code(stolen) == "BEDS-403"
    anonymous = await client.call("spew_post", "create", {"body": "who?"}, principal=ann)
    assert code(anonymous) == "BEDS-401"  # a claimed principal is no principal

    me = await client.call(
        "beds_user", "fetch", {"query": "by_handle", "params": {"handle": ann}}, token=ann_token
    )
    assert me.ok, me.error
    assert "password_hash" not in me.data[0]

    started = time.monotonic()
    out = await client.call("beds_session", "delete", {}, token=ann_token)
    assert out.ok, out.error
    one, two = two_nodes
    reached = [await revoked_after(node, ann_token, started) for node in (one, two)]
    refused = await client.call(
        "spew_post", "update", {"id": post.data["id"], "body": "x"}, token=ann_token
    )
    assert code(refused) == "BEDS-401"
    still = await client.call("spew_post", "create", {"body": "bob still"}, token=bob_token)
    assert still.ok, still.error
    figures({"revocation_reached_both_nodes_ms": round(max(reached) * 1000, 1)})


async def test_a_node_that_starts_late_learns_the_revocations_that_matter(
    node_config: Path, figures: Figures
) -> None:
    first, second = configs(node_config)
    async with (
        BedsNode(first) as one,
        BedsClient(
            first.amqp.url,
            exchange=first.amqp.events_exchange,
            env=first.node.env,
            timeout=15,
        ) as client,
    ):
        token = await sign_up_and_log_in(client, handle())
        out = await client.call("beds_session", "delete", {}, token=token)
        assert out.ok, out.error
        async with BedsNode(second) as late:
            started = time.monotonic()
            took = await revoked_after(late, token, started)
        assert one.ready
    figures({"late_node_learnt_revocation_ms": round(took * 1000, 1)})


async def test_a_password_change_and_a_deactivation_end_every_session(
    two_nodes: tuple[BedsNode, BedsNode], client: BedsClient
) -> None:
    name = handle()
    token = await sign_up_and_log_in(client, name)
    second = await client.call("beds_session", "create", {"handle": name, "password": PASSWORD})
    me = await client.call(
        "beds_user", "fetch", {"query": "by_handle", "params": {"handle": name}}, token=token
    )
    user_id = me.data[0]["id"]
    changed = await client.call(
        "beds_user",
        "update",
        {"id": user_id, "password": "a new password", "old_password": PASSWORD},
        token=token,
    )
    assert changed.ok, changed.error
    started = time.monotonic()
    for old in (token, second.data["token"]):
        for node in two_nodes:
            await revoked_after(node, old, started)
    fresh = await client.call(
        "beds_session", "create", {"handle": name, "password": "a new password"}
    )
    assert fresh.ok, fresh.error
    gone = await client.call("beds_user", "delete", {"id": user_id}, token=fresh.data["token"])
    assert gone.ok, gone.error
    for node in two_nodes:
        await revoked_after(node, fresh.data["token"], time.monotonic())
    again = await client.call(
        "beds_session", "create", {"handle": name, "password": "a new password"}
    )
    assert code(again) == "BEDS-401"  # a deactivated user cannot log in


@pytest.mark.parametrize(
    "credential",
    [
        "wrong key",
        "expired",
        "other environment",
        "alg none",
        "garbage",
    ],
)
async def test_bad_credentials_are_refused_by_a_live_node(
    two_nodes: tuple[BedsNode, BedsNode], client: BedsClient, credential: str
) -> None:
    env = two_nodes[0].config.node.env
    dev = TestIdentity.development(env)
    _, claims, _ = dev.token("tests", ("member", "admin")).split(".")
    token = {
        "wrong key": TestIdentity(env=env).token("tests", ("member", "admin")),
        "expired": dev.token("tests", ("member", "admin"), now=time.time() - 3600),
        "other environment": TestIdentity.development("elsewhere").token("tests"),
        "alg none": f"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.",
        "garbage": "not.a.token",
    }[credential]
    response = await client.call("spew_post", "create", {"body": "x"}, token=token)
    assert code(response) == "BEDS-401"
    assert response.error is not None
    assert response.error.message == "the request's credential is not valid"


@pytest.mark.parametrize(
    "name", ["ann'; DROP TABLE usr_users; --", '{"$ne": ""}', "ann\x00", "Ann", "a" * 65]
)
async def test_metacharacters_in_a_handle_are_refused_and_store_nothing(
    two_nodes: tuple[BedsNode, BedsNode], client: BedsClient, name: str
) -> None:
    signed = await client.call("beds_user", "create", {"handle": name, "password": PASSWORD})
    assert code(signed) in {"BEDS-422", "BEDS-400"}
    login = await client.call("beds_session", "create", {"handle": name, "password": PASSWORD})
    assert code(login) in {"BEDS-401", "BEDS-422", "BEDS-400"}


async def test_ten_thousand_failed_logins_are_throttled_and_others_are_served(
    two_nodes: tuple[BedsNode, BedsNode], client: BedsClient, figures: Figures
) -> None:
    victim, other = handle(), handle()
    await sign_up_and_log_in(client, victim)
    other_token = await sign_up_and_log_in(client, other)
    guesses = [{"handle": victim, "password": f"guess {n}"} for n in range(10_000)]
    started = time.monotonic()
    codes: dict[str, int] = {}
    served = 0

    async def meanwhile() -> None:
        nonlocal served
        while time.monotonic() - started < 60 and sum(codes.values()) < len(guesses):
            response = await client.call(
                "spew_post", "create", {"body": "still here"}, token=other_token
            )
            assert response.ok, response.error
            served += 1

    async def guess_all() -> None:
        for start in range(0, len(guesses), 500):
            batch = guesses[start : start + 500]
            answers = await asyncio.gather(
                *(client.call("beds_session", "create", guess, timeout=60) for guess in batch)
            )
            for answer in answers:
                codes[code(answer)] = codes.get(code(answer), 0) + 1

    await asyncio.gather(guess_all(), meanwhile())
    took = time.monotonic() - started
    assert set(codes) <= {"BEDS-401", "BEDS-429"}
    # Each node lets 3 failures through (per handle and origin) before it throttles.
    assert codes.get("BEDS-401", 0) <= 2 * 3
    assert served > 0
    right = await client.call("beds_session", "create", {"handle": victim, "password": PASSWORD})
    assert code(right) == "BEDS-429"  # held for the window: even the right password waits
    figures(
        {
            "failed_logins": len(guesses),
            "answered_429": codes.get("BEDS-429", 0),
            "logins_per_second": round(len(guesses) / took),
            "other_requests_served_meanwhile": served,
        }
    )


async def test_no_password_or_token_is_written_anywhere(
    two_nodes: tuple[BedsNode, BedsNode], client: BedsClient, figures: Figures
) -> None:
    one, _ = two_nodes
    config = one.config
    seen_logs: list[str] = []
    sink = logger.add(
        lambda message: seen_logs.append(f"{message}{message.record['extra']}"), level="TRACE"
    )
    connection = await aiormq.connect(config.amqp.url)
    channel = await connection.channel()
    capture = unique_name("capture")
    await channel.queue_declare(capture, exclusive=True)
    await channel.queue_bind(capture, config.amqp.logs_exchange, routing_key="#")
    written: list[bytes] = []
    try:
        name = handle()
        token = await sign_up_and_log_in(client, name)
        replies = [
            await client.call("spew_profile", "create", {"display_name": "A"}, token=token),
            await client.call(
                "spew_profile", "update", {"handle": name, "display_name": "B"}, token=token
            ),
            await client.call(
                "beds_session", "create", {"handle": name, "password": PASSWORD + "x"}
            ),
            await client.call("beds_user", "create", {"handle": name, "password": PASSWORD}),
            await client.call(
                "beds_user",
                "update",
                {"id": 0, "password": PASSWORD, "old_password": PASSWORD},
                token=token,
            ),
        ]
        written += [repr(reply).encode() for reply in replies]
        # A request the node dead-letters (no reply_to), with its credential.
        body = orjson.dumps(
            {"operation": "create", "template": "spew_post", "payload": {"body": "x"}}
        )
        await channel.basic_publish(
            body,
            exchange=config.amqp.events_exchange,
            routing_key="spew_post.write",
            properties=Basic.Properties(
                content_type="application/json", headers={"authorization": bearer(token)}
            ),
        )
        await asyncio.sleep(1.5)  # lineage batches flush every 20 ms; the dead letter is quick
        while (message := await channel.basic_get(capture, no_ack=True)).body:
            written.append(message.body)
            written.append(repr(message.header.properties.headers).encode())
        dead = dead_letter_queue(config)
        letters = 0
        while (message := await channel.basic_get(dead, no_ack=True)).body:
            letters += 1
            written.append(repr(message.header.properties.headers).encode())
        assert letters >= 1
    finally:
        logger.remove(sink)
        await connection.close()
    everything = b"\n".join(written) + "\n".join(seen_logs).encode()
    assert PASSWORD.encode() not in everything
    signature = token.rsplit(".", 1)[1]
    assert signature.encode() not in everything
    assert b"x-beds-credential-removed" in everything
    figures({"bytes_searched": len(everything), "log_lines_searched": len(seen_logs)})
