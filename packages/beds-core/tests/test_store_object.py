"""A database call's lineage event names the object its template binds (store_object)."""

from __future__ import annotations

from typing import Any

import pytest

from beds.dispatch.trace import store_object
from beds.envelopes import Operation, Request, RequestMeta
from beds.lineage import Event, format_tree
from beds.templates.loader import parse_template

REL = """
name = "demo_post"
store = "rel"
tla = "dpo"
key = ["id"]
[fields.id]
type = "int"
generated = true
[fields.body]
type = "str"
[operations.create]
params = ["body"]
returns = ["id"]
procedure = "dpo_create"
[operations.delete]
params = ["id"]
[queries.by_id]
params = ["id"]
view = "dpo_posts_v"
[queries.count]
params = []
function = "dpo_count"
returns = "n"
"""

REC = """
name = "demo_doc"
store = "rec"
tla = "ddo"
key = ["id"]
[rec]
collection = "ddo_docs"
[fields.id]
type = "str"
[operations.create]
params = ["id"]
[queries.by_id]
params = ["id"]
"""


def request(operation: Operation, payload: dict[str, Any] | None = None) -> Request:
    return Request(
        operation=operation,
        template="demo",
        payload=payload or {},
        meta=RequestMeta(event_id="t.dev.1"),
    )


@pytest.mark.parametrize(
    ("operation", "payload", "expected"),
    [
        (Operation.CREATE, {"body": "x"}, "dpo_create"),
        (Operation.FETCH, {"query": "by_id", "params": {"id": 1}}, "dpo_posts_v"),
        (Operation.FETCH, {"query": "count"}, "dpo_count"),
        (Operation.FETCH, {"params": {"id": 1}}, "dpo_posts_v"),  # the default query
        (Operation.DELETE, {"id": 1}, ""),  # declares no object here
        (Operation.FETCH, {"query": "no_such_query"}, ""),
        (Operation.FETCH, {"query": ["not", "a", "name"]}, ""),
    ],
)
def test_the_bound_object_of_an_operation_or_query(
    operation: Operation, payload: dict[str, Any], expected: str
) -> None:
    template = parse_template(REL, source="demo_post.toml")
    assert store_object(template, request(operation, payload)) == expected


def test_a_rec_template_names_its_collection() -> None:
    template = parse_template(REC, source="demo_doc.toml")
    assert store_object(template, request(Operation.CREATE, {"id": "a"})) == "ddo_docs"
    assert store_object(template, request(Operation.FETCH, {"query": "by_id"})) == "ddo_docs"


def test_an_http_event_reads_as_the_root_of_a_tree() -> None:
    root = Event(
        event_id="http.dev.t-s",
        kind="http",
        node="http",
        env="dev",
        at=1.0,
        ms=3.0,
        operation="POST",
        message="/v1/demo_post",
        status=201,
        data={"trace_id": "t", "principal": "ann"},
    )
    child = Event(
        event_id="c.dev.1",
        parent_id=root.event_id,
        depth=1,
        kind="request",
        node="app1",
        env="dev",
        at=1.001,
        template="demo_post",
        operation="create",
        status=201,
    )
    lines = format_tree([root, child]).splitlines()
    assert lines[0].startswith("http    POST /v1/demo_post → 201 by ann trace t 3.0 ms")
    assert lines[1].startswith("  request create demo_post → 201 on app1")
