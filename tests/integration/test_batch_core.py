"""Batches through a real node: ``beds run`` serving ``spew_post`` from MariaDB, BedsClient calling.

Written against the wire contract (docs/wire-contract.md, "Batches"), not against either way a
store serves a batch: the REL adapter's own batch (feature ``batch``) or the node's fallback
(one single call per record). The one place the contract lets them differ, a keyed batch on a
store without the feature (``BEDS-405``, nothing written), is checked as such. Each test writes
posts of its own author, so tests never see each other's rows; MariaDB is read directly (as
the DBA would) to tell what was written.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from beds.client import BatchResult, BedsClient
from beds.codec import encode_response
from beds.envelopes import Operation
from beds.testing import TestIdentity, unique_name
from tests.integration.nodes import (
    Served,
    Stores,
    clean_environ,
    launch_served,
    stop_served,
    stored_posts,
    stores,
    wait_ready,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("stores",)  # a fixture defined in tests/integration/nodes.py

pytestmark = [pytest.mark.mariadb, pytest.mark.mongodb]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, stores: Stores
) -> Iterator[Served]:
    """One ``beds run`` node for the module (each test uses authors of its own)."""
    folder: Path = tmp_path_factory.mktemp("batch")
    node = launch_served(folder, amqp_url, stores, env=unique_name("batch"))
    yield node
    stop_served(node)


def author() -> str:
    return f"b_{uuid.uuid4().hex[:12]}"


def client(served: Served, amqp_url: str, token: str | None) -> BedsClient:
    return BedsClient(
        amqp_url,
        exchange=f"beds.events.{served.env}",
        env=served.env,
        origin="batch",
        timeout=30,
        token=token,
    )


def member(served: Served, handle: str) -> str:
    return TestIdentity.development(served.env).token(handle, ("member",))


def ids_of(results: list[BatchResult]) -> list[int]:
    return [int(r.data["id"]) for r in results if r.ok]


async def test_create_fetch_update_and_delete_many_round_trip(
    served: Served, amqp_url: str, stores: Stores
) -> None:
    ann = author()
    async with client(served, amqp_url, member(served, ann)) as beds:
        await wait_ready(served, beds)
        created = await beds.create_many(
            "spew_post", [{"body": f"post {n} #batch"} for n in range(7)], chunk=3
        )
        assert [(r.ok, r.status) for r in created] == [(True, 201)] * 7, [
            r.error for r in created if r.error
        ]
        ids = ids_of(created)
        # Each result is its own record's (chunks run at once, so ids interleave across them).
        assert sorted(await stored_posts(stores, ann)) == sorted(
            (i, f"post {n} #batch") for n, i in enumerate(ids)
        )

        found = await beds.fetch_many("spew_post", [{"id": ids[2]}, {"id": 2**62}, {"id": ids[0]}])
        assert [(r.ok, r.status) for r in found] == [(True, 200), (False, 404), (True, 200)]
        assert found[0].data["body"] == "post 2 #batch"
        assert found[0].data["author"] == ann
        assert found[1].error is not None
        assert found[1].error.code == "BEDS-404"

        updated = await beds.update_many(
            "spew_post", [{"id": i, "body": f"edited {i}"} for i in ids[:3]]
        )
        assert [r.status for r in updated] == [200] * 3
        deleted = await beds.delete_many("spew_post", [{"id": i} for i in ids[3:]])
        assert [r.data for r in deleted] == [{"deleted": 1}] * 4
        assert sorted(await stored_posts(stores, ann)) == [(i, f"edited {i}") for i in ids[:3]]

        # One envelope for the whole batch: 200 when every item succeeded, 207 otherwise.
        response = await beds.call(
            "spew_post", Operation.DELETE_MANY, {"records": [{"id": ids[0]}, {"id": ids[0]}]}
        )
        assert (response.ok, response.status) == (True, 207)
        assert response.data["succeeded"] == 1
        assert response.data["failed"] == 1
        assert response.data["results"][1]["error"]["code"] == "BEDS-404"


async def test_a_bad_record_fails_alone_with_its_own_path(
    served: Served, amqp_url: str, stores: Stores
) -> None:
    ann = author()
    async with client(served, amqp_url, member(served, ann)) as beds:
        await wait_ready(served, beds)
        records = [{"body": "fine"}, {"body": "x" * 281}, {"body": "also fine", "extra": 1}]
        response = await beds.call("spew_post", Operation.CREATE_MANY, {"records": records})
        assert (response.ok, response.status) == (True, 207)
        results = response.data["results"]
        assert [r["status"] for r in results] == [201, 422, 422]
        assert results[1]["error"]["code"] == "BEDS-422"
        assert results[1]["error"]["details"] == [
            "$.records[1].body: must be at most 280 characters, got 281"
        ]
        assert results[2]["error"]["details"] == [
            "$.records[2].extra: is not a field of this operation"
        ]
        assert list(await stored_posts(stores, ann)) == [(results[0]["data"]["id"], "fine")]


async def test_an_oversized_batch_is_refused_whole_and_nothing_runs(
    served: Served, amqp_url: str, stores: Stores
) -> None:
    ann = author()
    async with client(served, amqp_url, member(served, ann)) as beds:
        await wait_ready(served, beds)
        records = [{"body": f"n{n}"} for n in range(501)]
        response = await beds.call("spew_post", Operation.CREATE_MANY, {"records": records})
        assert (response.ok, response.status) == (False, 400)
        assert response.error is not None
        assert response.error.code == "BEDS-400"
        assert response.error.details == ("$.records: must hold 1 to 500 items, got 501",)
        results = await beds.create_many("spew_post", records, chunk=501)
        assert {(r.status, r.error.code if r.error else "") for r in results} == {(400, "BEDS-400")}
        assert not await stored_posts(stores, ann)


async def test_a_keyed_batch_runs_at_most_once(
    served: Served, amqp_url: str, stores: Stores
) -> None:
    ann = author()
    key = f"batch-{uuid.uuid4().hex}"
    records = [{"body": "one"}, {"body": ""}, {"body": "three"}]
    async with client(served, amqp_url, member(served, ann)) as beds:
        await wait_ready(served, beds)
        first = await beds.create_many("spew_post", records, idempotency_key=key)
        if first[0].status == 405:
            # The contract's one difference: a store without the batch feature refuses keys.
            assert first[0].error is not None
            assert first[0].error.code == "BEDS-405"
            assert "idempotency key" in first[0].error.message
            assert not await stored_posts(stores, ann)
            return
        again = await beds.create_many("spew_post", records, idempotency_key=key)
        assert again == first
        assert [r.status for r in first] == [201, 422, 201]
        stored = await stored_posts(stores, ann)
        assert sorted(stored) == [(ids_of(first)[0], "one"), (ids_of(first)[1], "three")]
        assert set(stored.values()) == {1}, "nothing written twice"
        other = await beds.create_many("spew_post", [{"body": "new"}], idempotency_key=key)
        assert other[0].error is not None
        assert other[0].error.code == "BEDS-409K"


async def test_access_is_the_single_operations_and_owners_are_bound_per_record(
    served: Served, amqp_url: str, stores: Stores
) -> None:
    ann, bob = author(), author()
    async with (
        client(served, amqp_url, None) as anonymous,
        client(served, amqp_url, member(served, ann)) as as_ann,
        client(served, amqp_url, member(served, bob)) as as_bob,
    ):
        await wait_ready(served, anonymous)
        refused = await anonymous.call(
            "spew_post", Operation.CREATE_MANY, {"records": [{"body": "hi", "author": ann}]}
        )
        assert (refused.status, refused.error.code if refused.error else "") == (401, "BEDS-401")
        assert not await stored_posts(stores, ann)

        created = await as_ann.create_many(
            "spew_post", [{"body": "mine"}, {"body": "forged", "author": bob}]
        )
        assert [r.status for r in created] == [201, 403]
        assert created[1].error is not None
        assert created[1].error.details == (f"$.records[1].author: the caller is {ann!r}",)
        [post] = ids_of(created)
        assert list(await stored_posts(stores, ann)) == [(post, "mine")]
        assert not await stored_posts(stores, bob)

        stolen = await as_bob.update_many("spew_post", [{"id": post, "body": "bob was here"}])
        assert stolen[0].status == 403
        gone = await as_bob.delete_many("spew_post", [{"id": post}])
        assert gone[0].status == 403
        assert list(await stored_posts(stores, ann)) == [(post, "mine")]


async def test_secrets_never_reach_a_reply(served: Served, amqp_url: str, stores: Stores) -> None:
    ann = author()
    token = member(served, ann)
    async with client(served, amqp_url, token) as beds:
        await wait_ready(served, beds)
        replies: list[bytes] = []
        payloads: list[tuple[Operation, dict[str, Any]]] = [
            (Operation.CREATE_MANY, {"records": [{"body": "ok"}, {"body": 5}, "x"]}),
            (Operation.FETCH_MANY, {"keys": [{"id": 1}, {"id": "x"}], "consistency": "nope"}),
            (Operation.UPDATE_MANY, {"records": [{"id": 2**62, "body": "gone"}]}),
            (Operation.DELETE_MANY, {"records": 3}),
        ]
        for operation, payload in payloads:
            replies.append(encode_response(await beds.call("spew_post", operation, payload)))
        text = b"\n".join(replies)
        assert token.encode() not in text
        assert b"Bearer" not in text
        assert stores.rel_url.encode() not in text
        for reply in replies:
            assert orjson.loads(reply)["version"] == 1


def test_beds_load_sends_json_lines_and_prints_a_result_line_each(
    served: Served, stores: Stores
) -> None:
    ann = author()
    lines = b'{"body": "from a file"}\nnot json\n{"body": ""}\n{"body": "last"}\n'
    run = subprocess.run(
        [sys.executable, "-m", "beds", "load", "spew_post", "--config", str(served.config)],
        input=lines,
        capture_output=True,
        timeout=60,
        env={**clean_environ(), "BEDS_TOKEN": member(served, ann)},
        check=False,
    )
    assert run.returncode == 1, run.stderr.decode()
    out = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert [(o["line"], o["status"]) for o in out] == [(1, 201), (2, 400), (3, 422), (4, 201)]
    assert b"beds: line 2: not valid JSON" in run.stderr
    assert b"2 of 4 lines succeeded, 2 failed" in run.stderr
    posts = asyncio.run(stored_posts(stores, ann))
    assert sorted(body for _, body in posts) == ["from a file", "last"]
