"""A second, non-SPEW template package gets routes and an OpenAPI document, edge unchanged.

``tests/fixtures/beds-templates-library`` (one REC template, ``lib_book``) registers through
its own plugin module into a registry, as the node's IPL does; the edge is built from that
registry. Its OpenAPI document, and the one of the installed packages, must validate against
the official OpenAPI 3.1 schema (``openapi-spec-validator`` bundles it), and its AsyncAPI
document against the official AsyncAPI 3.0.0 schema.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate as validate_openapi

from beds.config import load_config
from beds.contract import asyncapi_document
from beds.registry import TemplateRegistry
from beds_http.app import create_app, installed_templates
from beds_http.openapi import openapi_document
from beds_http.settings import parse_settings

ROOT = Path(__file__).resolve().parents[3]
LIBRARY = ROOT / "tests/fixtures/beds-templates-library/src"
ASYNCAPI = ROOT / "packages/beds-core/tests/contract_schemas/asyncapi-3.0.0.json"


@pytest.fixture
def library(monkeypatch: pytest.MonkeyPatch) -> Iterator[TemplateRegistry]:
    """The library package's templates, registered by its own plugin module."""
    monkeypatch.syspath_prepend(str(LIBRARY))
    plugin = importlib.import_module("beds_templates_library.plugin")
    registry = TemplateRegistry()
    plugin.beds_register_templates(registry)
    yield registry
    for name in [m for m in sys.modules if m.startswith("beds_templates_library")]:
        del sys.modules[name]


def test_the_library_package_gets_every_route_in_a_valid_openapi(
    library: TemplateRegistry,
) -> None:
    document = openapi_document(library, parse_settings({}))
    validate_openapi(document)  # raises OpenAPIValidationError naming the broken part
    paths = document["paths"]
    assert set(paths["/v1/lib_book"]) == {"post", "patch", "delete"}
    for query in ("by_isbn", "by_isbns", "since_year"):
        assert "get" in paths[f"/v1/lib_book/{query}"], query
    in_list = {p["name"]: p for p in paths["/v1/lib_book/by_isbns"]["get"]["parameters"]}
    assert in_list["isbns"]["schema"]["type"] == "array"
    paged = {p["name"] for p in paths["/v1/lib_book/since_year"]["get"]["parameters"]}
    assert {"from_year", "limit", "cursor"} <= paged
    single = {p["name"] for p in paths["/v1/lib_book/by_isbn"]["get"]["parameters"]}
    assert "cursor" not in single  # by_isbn has no order: one page
    assert not any(path.startswith("/v1/spew_") for path in paths)


def test_the_installed_packages_give_a_valid_openapi() -> None:
    config = load_config(None, environ={})
    document = openapi_document(installed_templates(config), parse_settings({}))
    validate_openapi(document)
    assert "/v1/spew_post" in document["paths"]


def test_the_library_package_gets_a_valid_asyncapi(library: TemplateRegistry) -> None:
    document = asyncapi_document(library, load_config(None, environ={}))
    validator = jsonschema.Draft7Validator(orjson.loads(ASYNCAPI.read_bytes()))
    assert [e.message for e in validator.iter_errors(document)] == []
    assert "lib_book.fetch.since_year" in document["operations"]


async def test_the_edge_serves_the_library_routes(library: TemplateRegistry) -> None:
    config = load_config(None, environ={})
    app = create_app(config, registry=library, live=False)
    # No lifespan: the edge's own checks answer before any node is asked.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        served = await http.get("/openapi.json")
        assert served.status_code == 200
        document: dict[str, Any] = served.json()
        assert document == orjson.loads(
            orjson.dumps(openapi_document(library, parse_settings(config.http, config)))
        )
        reply = await http.get("/v1/lib_book/since_year", params={"from_year": "recent"})
        assert reply.status_code == 422, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json")
        problem = reply.json()
        assert problem["code"] == "BEDS-422"
        assert problem["details"] == ["$.query.from_year: must be an integer, got 'recent'"]
        missing = await http.get("/v1/spew_post/recent")
        assert missing.status_code == 404
