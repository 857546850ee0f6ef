"""BedsClient's batch methods: chunks, keys per chunk, messages in flight, results in order.

The transport is replaced by a fake ``call`` (BedsClient's own path is tested over RabbitMQ in
tests/integration/test_batch_core.py); these tests hold the client's side of the contract.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from beds.client import BatchResult, BedsClient
from beds.envelopes import ErrorBody, Operation, Response
from beds.errors import NotFound, ReplyTimeout


class FakeNode:
    """Answers batch messages as a node would, slowly and out of order; records what it got."""

    def __init__(self, *, refuse: int | None = None, fail: int | None = None) -> None:
        self.sent: list[tuple[str, Operation, dict[str, Any], str | None]] = []
        self.waiting = 0
        self.most_waiting = 0
        self.refuse = refuse
        self.fail = fail

    async def call(
        self,
        template: str,
        operation: Operation | str,
        payload: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Response:
        assert payload is not None
        number = len(self.sent)
        self.sent.append((template, Operation(operation), payload, idempotency_key))
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await asyncio.sleep(random.uniform(0, 0.005))
        finally:
            self.waiting -= 1
        if number == self.fail:
            raise ReplyTimeout("no reply")
        if number == self.refuse:
            error = ErrorBody(code="BEDS-403", message="no", details=("principal: ann",))
            return Response(ok=False, status=403, error=error)
        items = payload.get("records", payload.get("keys"))
        assert isinstance(items, list)
        results = [
            {"ok": True, "status": 201, "data": {"n": item["n"]}}
            if item["n"] % 7
            else {
                "ok": False,
                "status": 404,
                "error": {"code": "BEDS-404", "message": "gone", "details": []},
            }
            for item in items
        ]
        failed = sum(not r["ok"] for r in results)
        return Response(
            ok=True,
            status=207 if failed else 201,
            data={"results": results, "succeeded": len(results) - failed, "failed": failed},
        )


def client_of(node: FakeNode) -> BedsClient:
    client = BedsClient()
    client.call = node.call  # type: ignore[method-assign]
    return client


async def test_records_go_in_chunks_and_come_back_in_order_one_result_each() -> None:
    node = FakeNode()
    records = ({"n": n} for n in range(1, 1001))  # any iterable, not only a list
    results = await client_of(node).create_many("t", records, chunk=300, in_flight=2)
    assert [len(sent[2]["records"]) for sent in node.sent] == [300, 300, 300, 100]
    assert node.most_waiting <= 2
    assert [r.index for r in results] == list(range(1000))
    assert [r.data["n"] for r in results if r.ok] == [n for n in range(1, 1001) if n % 7]
    missing = [r for r in results if not r.ok]
    assert all(r.status == 404 for r in missing)
    assert isinstance(missing[0].exception(), NotFound)
    assert results[0].exception() is None
    # Keyed by default, like single writes: one key per call, ":n" per message.
    keys = [sent[3] for sent in node.sent]
    assert keys[0] is not None
    base = keys[0].rsplit(":", 1)[0]
    assert keys == [f"{base}:{n}" for n in range(4)]


async def test_batch_writes_go_unkeyed_only_when_the_client_says_so() -> None:
    node = FakeNode()
    client = BedsClient(idempotent_writes=False)
    client.call = node.call  # type: ignore[method-assign]
    await client.create_many("t", [{"n": 1}, {"n": 2}], chunk=1)
    await client_of(node).fetch_many("t", [{"n": 1}])
    assert [sent[3] for sent in node.sent] == [None, None, None]


async def test_two_calls_never_share_a_default_key() -> None:
    node = FakeNode()
    client = client_of(node)
    await client.create_many("t", [{"n": 1}])
    await client.create_many("t", [{"n": 1}])
    first, second = (sent[3] for sent in node.sent)
    assert first is not None
    assert first != second


async def test_a_keyed_call_sends_chunk_n_with_key_n_so_a_retry_repeats_exactly() -> None:
    node = FakeNode()
    client = client_of(node)
    keys = [{"n": n} for n in range(1, 6)]
    await client.delete_many("t", keys, chunk=2, idempotency_key="load-7")
    await client.delete_many("t", keys, chunk=2, idempotency_key="load-7")
    assert [sent[3] for sent in node.sent] == ["load-7:0", "load-7:1", "load-7:2"] * 2
    assert {sent[1] for sent in node.sent} == {Operation.DELETE_MANY}


async def test_fetch_many_sends_keys_and_the_consistency() -> None:
    node = FakeNode()
    await client_of(node).fetch_many("t", [{"n": 1}], consistency="secondary")
    [(_, operation, payload, _)] = node.sent
    assert operation is Operation.FETCH_MANY
    assert payload == {"keys": [{"n": 1}], "consistency": "secondary"}


async def test_a_message_refused_whole_gives_each_of_its_items_that_error() -> None:
    node = FakeNode(refuse=1)
    results = await client_of(node).update_many("t", [{"n": n} for n in range(1, 7)], chunk=2)
    refused = [r for r in results if r.status == 403]
    assert [r.index for r in refused] == [2, 3]
    assert refused[0].error == ErrorBody(code="BEDS-403", message="no", details=("principal: ann",))
    assert refused[0].to_json() == {
        "index": 2,
        "ok": False,
        "status": 403,
        "error": {"code": "BEDS-403", "message": "no", "details": ["principal: ann"]},
    }


async def test_a_transport_failure_raises_and_stops_sending() -> None:
    node = FakeNode(fail=0)
    with pytest.raises(ReplyTimeout):
        await client_of(node).create_many("t", [{"n": n} for n in range(1, 100)], chunk=10)
    assert len(node.sent) <= 4  # the first reply was awaited before more than in_flight went


async def test_bad_chunk_or_in_flight_is_refused_before_sending() -> None:
    node = FakeNode()
    with pytest.raises(ValueError, match="at least 1"):
        await client_of(node).create_many("t", [{"n": 1}], chunk=0)
    assert node.sent == []


def test_a_result_prints_as_the_wire_item_with_its_index() -> None:
    result = BatchResult(index=4, ok=True, status=201, data={"id": 9})
    assert result.to_json() == {"index": 4, "ok": True, "status": 201, "data": {"id": 9}}
