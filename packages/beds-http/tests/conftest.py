"""The edge in-process: a real dispatcher (LocalNode) behind it instead of RabbitMQ.

Every step of a request but the AMQP transport runs (the node's decoding, token checks, access
rules, validation, the memory store), so the tests see what the node answers; ``caller.calls``
counts what reached the node, so a test can assert that a refused request never did.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from beds.auth.credential import bearer
from beds.codec import encode_request
from beds.config.model import Config
from beds.envelopes import Operation, Request, RequestMeta, Response
from beds.templates.loader import parse_template
from beds.testing import MemoryAdapter, TestIdentity
from beds.testing.local import LocalNode
from beds_http.app import create_app
from beds_http.settings import parse_settings

MEMO = """
name = "memo"
store = "memory"
tla = "mem"
key = ["id"]
[capabilities]
live = true
[access]
create = ["member"]
update = ["member"]
delete = ["member"]
fetch = ["member"]
owner = "author"
[fields.id]
type = "int"
generated = true
[fields.author]
type = "str"
max_length = 64
[fields.text]
type = "str"
max_length = 200
[fields.stars]
type = "int"
required = false
nullable = true
[fields.ratio]
type = "float"
required = false
nullable = true
[fields.done]
type = "bool"
required = false
nullable = true
[operations.create]
params = ["author", "text", "stars", "ratio", "done"]
returns = ["id"]
[operations.update]
params = ["id", "text"]
[operations.delete]
params = ["id"]
[queries.by_author]
params = ["author"]
order_by = ["id"]
max_limit = 50
[queries.by_id]
params = ["id"]
max_limit = 1
[queries.among]
params = ["ids"]
[queries.among.where]
ids = { field = "id", op = "in" }
[queries.flagged]
params = ["done", "ratio"]
[queries.hidden]
params = ["id"]
internal = true
"""

BOARD = """
name = "board"
store = "memory"
tla = "brd"
key = ["id"]
[capabilities]
live = true
[access]
fetch = ["*"]
[fields.id]
type = "int"
generated = true
[fields.text]
type = "str"
[operations.create]
params = ["text"]
returns = ["id"]
[queries.all]
params = []
[long_operations.dump]
steps = 2
description = "Every board record"
"""


class LocalCaller:
    """A :class:`~beds_http.forward.Caller` that hands requests to a LocalNode's dispatcher."""

    def __init__(self, node: LocalNode) -> None:
        self.node = node
        self.calls: list[Request] = []

    async def connect(self) -> None:
        return None

    async def call(
        self,
        template: str,
        operation: Operation | str,
        payload: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        token: str | None = None,
        idempotency_key: str | None = None,
        parent_id: str | None = None,
        depth: int | None = None,
    ) -> Response:
        request = Request(
            operation=Operation(operation),
            template=template,
            payload=payload or {},
            meta=RequestMeta(
                event_id=f"edge.test.{os.urandom(16).hex()}",
                parent_id=parent_id or "",
                depth=depth or 0,
                idempotency_key=idempotency_key,
                deadline=time.time() + (timeout or 5),
                origin="http",
            ),
        )
        self.calls.append(request)
        credential = bearer(token) if token else None
        _, response = await self.node.dispatcher.handle(
            encode_request(request), "application/json", None, credential, "http"
        )
        return response


def templates() -> dict[str, Any]:
    found = [parse_template(text, source=f"{i}.toml") for i, text in enumerate((MEMO, BOARD))]
    return {t.name: t for t in found}


@pytest.fixture
def identity() -> TestIdentity:
    return TestIdentity(env="test")


@pytest.fixture
def caller(identity: TestIdentity) -> LocalCaller:
    adapter = MemoryAdapter("memory")
    node = LocalNode(templates().values(), {"memory": adapter}, identity=identity, tickets=adapter)
    return LocalCaller(node)


def make_app(caller: LocalCaller, **http: Any) -> Any:
    config = Config(http=http)
    return create_app(config, templates(), caller, live=False, settings=parse_settings(http))


@pytest.fixture
async def edge(caller: LocalCaller) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the edge (no sockets: httpx's ASGI transport)."""
    app = make_app(caller, max_body_bytes=2048, max_json_depth=8)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        client.app = app  # type: ignore[attr-defined]  # the tests read its metrics
        yield client


@pytest.fixture
def app_with(caller: LocalCaller) -> Any:
    """``app_with(**http)``: an edge application with those ``[http]`` settings."""
    return lambda **http: make_app(caller, **http)
