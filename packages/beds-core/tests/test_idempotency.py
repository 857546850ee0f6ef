"""Idempotent writes through the dispatcher: at most once per key, repeats get the first answer.

The real stores have their own integration tests (tests/integration/rel, rec); here the
in-memory adapter shows the dispatcher's side: the fingerprint, the TTL and the refusals.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds.codec import encode_request
from beds.config.model import ReliabilitySettings
from beds.dispatch import Dispatcher
from beds.envelopes import Operation, Request, RequestMeta, Response
from beds.factory import Factory
from beds.idempotency import fingerprint
from beds.namaste import CallContext, Record
from beds.templates.model import Template
from beds.testing import MemoryAdapter, TestIdentity

IDENTITY = TestIdentity(env="test")
ALICE = IDENTITY.credential("alice")
NOTE = "demo_item"
RECORD = {"title": "abc", "count": 1, "active": True}


class PlainAdapter(MemoryAdapter):
    """A store that does not remember idempotency keys."""

    idempotent_writes = False


def dispatcher(template: Template, adapter: MemoryAdapter, *, ttl: float = 60.0) -> Dispatcher:
    factory = Factory({template.name: template}, {"memory": adapter})
    return Dispatcher(
        factory,
        node="n1",
        env="test",
        max_message_bytes=65536,
        reliability=ReliabilitySettings(idempotency_ttl=ttl, retry_initial_delay=0.001),
        authenticator=IDENTITY.authenticator,
    )


def request(
    operation: Operation = Operation.CREATE,
    payload: dict[str, Any] | None = None,
    key: str | None = "k-1",
    principal: str | None = "alice",
) -> bytes:
    return encode_request(
        Request(
            operation=operation,
            template=NOTE,
            payload=RECORD if payload is None else payload,
            meta=RequestMeta(idempotency_key=key, principal=principal),
        )
    )


async def send(target: Dispatcher, body: bytes) -> Response:
    _, response = await target.handle(body, "application/json", credential=ALICE)
    return response


async def test_a_repeated_key_returns_the_first_response_without_writing_again(
    demo_template: Template,
) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    first = await send(target, request())
    again = await send(target, request())
    assert first.ok, first.error
    assert (again.ok, again.status, again.data) == (True, 201, first.data)
    assert len(adapter.tables[NOTE]) == 1
    assert adapter.calls.count(("create", NOTE)) == 1


async def test_writes_without_a_key_or_with_different_keys_all_run(
    demo_template: Template,
) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    answers = [await send(target, request(key=key)) for key in (None, None, "k-1", "k-2", "k-2")]
    assert all(answer.ok for answer in answers)
    assert len(adapter.tables[NOTE]) == 4


async def test_a_key_reused_for_another_payload_is_refused_and_writes_nothing(
    demo_template: Template,
) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    assert (await send(target, request())).ok
    other = await send(target, request(payload={**RECORD, "title": "xyz"}))
    assert not other.ok
    assert other.error is not None
    assert (other.status, other.error.code) == (409, "BEDS-409K")
    assert other.error.message == (
        "the idempotency key was first used for another request; this one is not executed"
    )
    assert len(adapter.tables[NOTE]) == 1


async def test_a_failed_write_is_forgotten_so_a_repeat_runs_it(demo_template: Template) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    real_create = adapter._create
    failures = iter([True])

    async def fail_once(template: Template, record: Record) -> Record:
        if next(failures, False):
            raise RuntimeError("boom")
        return await real_create(template, record)

    adapter._create = fail_once  # type: ignore[method-assign]
    failed = await send(target, request())
    assert failed.error is not None
    assert failed.error.code == "BEDS-500"
    assert (await send(target, request())).ok
    assert len(adapter.tables[NOTE]) == 1


async def test_a_repeat_while_the_first_write_runs_is_in_doubt(demo_template: Template) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    release = asyncio.Event()
    real_create = adapter._create

    async def slow(template: Template, record: Record) -> Record:
        await release.wait()
        return await real_create(template, record)

    adapter._create = slow  # type: ignore[method-assign]
    first = asyncio.create_task(send(target, request()))
    await asyncio.sleep(0.01)
    repeat = await send(target, request())
    release.set()
    assert (await first).ok
    assert repeat.error is not None
    assert (repeat.status, repeat.error.code) == (409, "BEDS-409W")
    assert len(adapter.tables[NOTE]) == 1


async def test_an_expired_key_runs_the_write_again(demo_template: Template) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter, ttl=0.01)
    assert (await send(target, request())).ok
    await asyncio.sleep(0.02)
    assert (await send(target, request())).ok
    assert len(adapter.tables[NOTE]) == 2


async def test_update_and_delete_are_idempotent_too(demo_template: Template) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    created = await send(target, request(key=None))
    assert created.ok
    key = {"id": created.data["id"]}
    for _ in range(2):
        deleted = await send(target, request(Operation.DELETE, key, key="del-1"))
        assert (deleted.ok, deleted.data) == (True, {"deleted": 1})
    # without the key the second delete would have found nothing
    gone = await send(target, request(Operation.DELETE, key, key=None))
    assert gone.error is not None
    assert gone.error.code == "BEDS-404"


async def test_a_store_without_idempotency_refuses_keys_rather_than_ignore_them(
    demo_template: Template,
) -> None:
    adapter = PlainAdapter()
    target = dispatcher(demo_template, adapter)
    refused = await send(target, request())
    assert refused.error is not None
    assert (refused.status, refused.error.code) == (405, "BEDS-405")
    assert "does not support idempotency keys" in refused.error.message
    assert NOTE not in adapter.tables or not adapter.tables[NOTE]
    assert (await send(target, request(key=None))).ok


async def test_reads_ignore_the_key(demo_template: Template) -> None:
    adapter = PlainAdapter()
    target = dispatcher(demo_template, adapter)
    fetched = await send(
        target, request(Operation.FETCH, {"query": "by_count", "params": {"count": 1}})
    )
    assert fetched.ok, fetched.error


@pytest.mark.parametrize("key", ["", " k", "k ", "a\nb", "x" * 201])
async def test_malformed_keys_are_refused_before_anything_runs(
    demo_template: Template, key: str
) -> None:
    adapter = MemoryAdapter()
    target = dispatcher(demo_template, adapter)
    body = request(key="placeholder").replace(b'"placeholder"', orjson.dumps(key))
    refused = await send(target, body)
    assert refused.error is not None
    assert refused.error.code == "BEDS-400"
    assert any("idempotency_key" in detail for detail in refused.error.details)
    assert not adapter.calls


WIRE_VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=5))


@given(payload=st.dictionaries(st.text(max_size=5), WIRE_VALUES, max_size=5))
def test_fingerprints_ignore_key_order_and_see_every_value(payload: dict[str, Any]) -> None:
    def make(body: dict[str, Any]) -> Request:
        return Request(operation=Operation.CREATE, template=NOTE, payload=body)

    reordered = dict(reversed(list(payload.items())))
    assert fingerprint(make(payload)) == fingerprint(make(reordered))
    changed = {**payload, "extra-field": 1}
    assert fingerprint(make(payload)) != fingerprint(make(changed))
    assert fingerprint(make(payload)) != fingerprint(
        attrs.evolve(make(payload), operation=Operation.UPDATE)
    )
    alice, bob = (
        attrs.evolve(make(payload), meta=attrs.evolve(make(payload).meta, principal=who))
        for who in ("u-alice", "u-bob")
    )
    assert fingerprint(alice) != fingerprint(bob)  # one caller's key never answers another


def test_call_context_defaults_carry_no_key() -> None:
    ctx = CallContext(event_id="e")
    assert (ctx.idempotency_key, ctx.fingerprint) == (None, "")
