"""The OpenAPI document is written from the route table the application serves."""

from __future__ import annotations

from typing import Any

from starlette.routing import Mount, Route

from beds_http.openapi import docs_page, openapi_document
from beds_http.settings import parse_settings


def served(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the application serves (HEAD left out)."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "/v1":
            for sub in route.routes:
                assert isinstance(sub, Route)
                found |= {(m, f"/v1{sub.path}") for m in sub.methods or () if m != "HEAD"}
        elif isinstance(route, Route):
            found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return found


def test_every_served_route_is_documented_and_nothing_else(app_with: Any) -> None:
    app = app_with()
    document = app.state.openapi
    documented = {
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    }
    served_routes = served(app) - {("GET", "/openapi.json"), ("GET", "/docs")}
    assert documented == served_routes


def test_template_routes_follow_the_declarations(app_with: Any) -> None:
    document = app_with().state.openapi
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert set(paths["/v1/memo"]) == {"post", "patch", "delete"}
    assert set(paths["/v1/board"]) == {"post"}  # board declares no update or delete
    assert "/v1/memo/hidden" not in paths  # internal queries have no route
    among = {p["name"]: p for p in paths["/v1/memo/among"]["get"]["parameters"]}
    assert among["ids"]["schema"] == {"type": "array", "items": {"type": "integer"}}
    assert among["ids"]["explode"] is True
    by_author = {p["name"]: p for p in paths["/v1/memo/by_author"]["get"]["parameters"]}
    assert by_author["limit"]["schema"]["maximum"] == 50
    assert "cursor" in by_author  # pageable
    assert "cursor" not in among
    memo = document["components"]["schemas"]["memo"]["properties"]
    assert memo["text"] == {"type": "string", "maxLength": 200}
    assert memo["stars"] == {"type": ["integer", "null"]}
    create = paths["/v1/memo"]["post"]
    assert "201" in create["responses"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "author",
        "text",
    ]
    ids = [op["operationId"] for methods in paths.values() for op in methods.values()]
    assert len(ids) == len(set(ids))


def test_openapi_document_is_callable_on_its_own(app_with: Any) -> None:
    templates = app_with().state.hub.templates
    document = openapi_document(templates, parse_settings({"public_url": "https://x.example"}))
    assert document["servers"] == [{"url": "https://x.example"}]
    assert "/v1/memo/by_id" in document["paths"]


def test_the_docs_page_lists_every_operation_without_loading_anything(app_with: Any) -> None:
    document = app_with().state.openapi
    page = docs_page(document)
    for outside in ("<script", "<link", "//cdn", "https://", "http://"):
        assert outside not in page
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page
