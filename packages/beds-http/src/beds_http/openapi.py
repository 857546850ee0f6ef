"""The OpenAPI 3.1 document, written from the route table the edge serves, and ``/docs``.

:func:`openapi_document` walks :func:`beds_http.routes.route_table` (the generated template
routes) and the edge's fixed routes, so a route exists exactly when the document describes it.
Field schemas follow the template declarations (types, lengths, patterns, bounds; ``nullable``
adds ``"null"``); ``secret`` fields never appear in a response schema.

``/docs`` is a plain HTML page listing every operation from the same document: no maintained
Python package ships the Swagger UI or Redoc assets for offline use, and the edge loads
nothing from a CDN (docs/http.md, "OpenAPI").

Why this module is long: the document is data, written out operation by operation (the
generated template routes, then the edge's fixed ones, each with its parameters, bodies and
responses); splitting it would scatter one document over several modules.
"""

from __future__ import annotations

import html
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

from beds.envelopes import Operation
from beds.registry import TemplateRegistry
from beds.templates.model import FieldType
from beds_http.routes import RouteSpec, route_table

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.templates.model import FieldSpec, Template
    from beds_http.routes import Param
    from beds_http.settings import HttpSettings

__all__ = ("docs_page", "openapi_document")

_PROBLEM: Final = {"$ref": "#/components/schemas/Problem"}
_ERRORS: Final = {
    "default": {
        "description": "An error (RFC 9457 problem; docs/errors.md lists the codes)",
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }
}
_BEARER: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {}]
"""Every template route takes a Bearer token, or none (the template's access rules decide)."""


def field_schema(field: FieldSpec | None) -> dict[str, Any]:
    """The JSON Schema of a field's values."""
    if field is None:
        return {"type": "string"}
    kind = field.type
    schema: dict[str, Any]
    if kind is FieldType.JSON:
        schema = {}
    elif kind is FieldType.INT:
        schema = {"type": "integer"}
    elif kind is FieldType.FLOAT:
        schema = {"type": "number"}
    elif kind is FieldType.BOOL:
        schema = {"type": "boolean"}
    elif kind is FieldType.DATETIME:
        schema = {"type": "string", "format": "date-time"}
    elif kind is FieldType.DECIMAL:
        schema = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
    else:
        schema = {"type": "string"}
    if kind is FieldType.STR:
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        if field.min_length is not None:
            schema["minLength"] = field.min_length
        if field.pattern is not None:
            schema["pattern"] = field.pattern.pattern
    if kind in (FieldType.INT, FieldType.FLOAT):
        if field.minimum is not None:
            schema["minimum"] = field.minimum
        if field.maximum is not None:
            schema["maximum"] = field.maximum
    if field.description:
        schema["description"] = field.description
    if field.nullable and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def _record_schema(template: Template) -> dict[str, Any]:
    properties = {
        name: field_schema(spec) for name, spec in template.fields.items() if not spec.secret
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if template.description:
        schema["description"] = template.description
    return schema


def _body_schema(template: Template, operation: Operation) -> dict[str, Any]:
    spec = template.operations[operation]
    params = [name for name in spec.params if name != spec.principal]
    properties = {name: field_schema(template.fields.get(name)) for name in params}
    required = [
        name
        for name in params
        if operation is Operation.CREATE
        and name in template.fields
        and template.fields[name].required
        and not template.fields[name].generated
        and not template.fields[name].nullable
    ]
    if operation is Operation.UPDATE:
        required = [name for name in template.key if name in properties]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _parameter(param: Param) -> dict[str, Any]:
    schema = field_schema(param.field)
    if param.many:
        schema = {"type": "array", "items": schema}
    document: dict[str, Any] = {
        "name": param.name,
        "in": "query",
        "required": param.required,
        "schema": schema,
    }
    if param.many:
        document["style"], document["explode"] = "form", True
    return document


def _fetch_parameters(route: RouteSpec) -> list[dict[str, Any]]:
    assert route.query is not None
    extra: list[dict[str, Any]] = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": route.query.max_limit},
        }
    ]
    if route.query.pageable:
        extra.append(
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "meta.next of the previous page",
                "schema": {"type": "string"},
            }
        )
    extra.append(
        {
            "name": "consistency",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["primary", "secondary", "cached"]},
        }
    )
    return [_parameter(p) for p in route.params] + extra


def _data(schema: dict[str, Any], *, paged: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"data": schema}
    if paged:
        properties["meta"] = {
            "type": "object",
            "properties": {"next": {"type": ["string", "null"]}},
            "required": ["next"],
        }
    return {"type": "object", "properties": properties, "required": list(properties)}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _template_operation(route: RouteSpec) -> dict[str, Any]:
    template = route.template
    record = {"$ref": f"#/components/schemas/{template.name}"}
    document: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [template.name],
        "security": _BEARER,
    }
    if route.operation in (Operation.CREATE, Operation.UPDATE):
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _body_schema(template, route.operation)}},
        }
        document["parameters"] = [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        ]
        returns = template.operations[route.operation].returns
        data = {
            "type": "object",
            "properties": {
                n: field_schema(template.fields.get(n))
                for n in returns
                if n in template.fields and not template.fields[n].secret
            },
        }
        document["responses"] = {str(route.status): _json("The returned fields", _data(data))}
    elif route.operation is Operation.DELETE:
        document["parameters"] = [_parameter(p) for p in route.params]
        document["responses"] = {"200": _json("How many were deleted", _data({}))}
    elif route.operation is Operation.SUBMIT:
        names = sorted(template.long_operations)
        document["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "operation": {"type": "string", "enum": names},
                            "params": {"type": "object"},
                        },
                        "required": ["operation"],
                    }
                }
            },
        }
        document["responses"] = {
            "202": _json("The ticket", _data({"$ref": "#/components/schemas/Ticket"}))
        }
    else:
        query = route.query
        assert query is not None
        document["parameters"] = _fetch_parameters(route)
        page = {"type": "array", "items": record}
        document["responses"] = {"200": _json("A page of records", _data(page, paged=True))}
    document["responses"].update(_ERRORS)
    return document


def _fixed_paths() -> dict[str, Any]:
    def op(summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {
            "summary": summary,
            "tags": more.pop("tags", ["edge"]),
            "responses": {**responses, **_ERRORS},
            **more,
        }

    credentials = {
        "type": "object",
        "properties": {"handle": {"type": "string"}, "password": {"type": "string"}},
        "required": ["handle", "password"],
    }
    signup = {
        "type": "object",
        "properties": {
            "handle": {"type": "string"},
            "password": {"type": "string"},
            "display_name": {"type": "string"},
            "email": {"type": "string"},
        },
        "required": ["handle", "password"],
    }

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    ticket_id = {
        "name": "ticket",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
    stream = {
        "description": "text/event-stream",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    ticket = _data({"$ref": "#/components/schemas/Ticket"})
    return {
        "/v1/auth/signup": {
            "post": op(
                "Sign up (beds_user create)",
                {"201": _json("The new user", _data({}))},
                operationId="auth_signup",
                requestBody=body(signup),
                tags=["auth"],
            )
        },
        "/v1/auth/login": {
            "post": op(
                "Log in: a session token for the Authorization header",
                {
                    "200": _json(
                        "The session",
                        _data(
                            {
                                "type": "object",
                                "properties": {
                                    "token": {"type": "string"},
                                    "expires_at": {},
                                    "handle": {"type": "string"},
                                    "roles": {"type": "array", "items": {"type": "string"}},
                                },
                            }
                        ),
                    )
                },
                operationId="auth_login",
                requestBody=body(credentials),
                tags=["auth"],
            )
        },
        "/v1/auth/logout": {
            "post": op(
                "Log out: every node refuses the token from now on",
                {"204": {"description": "Logged out"}},
                operationId="auth_logout",
                security=[{"bearer": []}],
                tags=["auth"],
            )
        },
        "/v1/auth/me": {
            "get": op(
                "The principal of the token",
                {
                    "200": _json(
                        "Who",
                        _data(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "handle": {"type": "string"},
                                    "roles": {"type": "array", "items": {"type": "string"}},
                                },
                            }
                        ),
                    )
                },
                operationId="auth_me",
                security=[{"bearer": []}],
                tags=["auth"],
            )
        },
        "/v1/tickets/{ticket}": {
            "get": op(
                "A ticket, and a page of its result once it succeeded",
                {
                    "200": _json(
                        "The ticket", _data({"$ref": "#/components/schemas/Ticket"}, paged=True)
                    )
                },
                operationId="ticket_read",
                parameters=[ticket_id],
                security=_BEARER,
                tags=["tickets"],
            ),
            "delete": op(
                "Cancel a ticket",
                {"200": _json("The ticket", ticket)},
                operationId="ticket_cancel",
                parameters=[ticket_id],
                security=_BEARER,
                tags=["tickets"],
            ),
        },
        "/v1/tickets/{ticket}/events": {
            "get": op(
                "The ticket as it changes (event: ticket), until it is finished",
                {"200": stream},
                operationId="ticket_events",
                parameters=[ticket_id],
                security=_BEARER,
                tags=["tickets"],
            )
        },
        "/v1/events": {
            "get": op(
                "Live record.changed events of live templates (Server-Sent Events)",
                {"200": stream},
                operationId="live_events",
                security=_BEARER,
                tags=["live"],
                parameters=[
                    {
                        "name": "template",
                        "in": "query",
                        "required": True,
                        "style": "form",
                        "explode": True,
                        "schema": {"type": "array", "items": {"type": "string"}},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/healthz": {
            "get": op(
                "Edge up and connected to RabbitMQ",
                {"200": _json("Healthy", {"type": "object"})},
                operationId="healthz",
            )
        },
        "/metrics": {
            "get": op(
                "Prometheus metrics",
                {
                    "200": {
                        "description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                operationId="metrics",
            )
        },
    }


def openapi_document(
    registry: TemplateRegistry | Mapping[str, Template], settings: HttpSettings
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes an edge with ``registry`` serves."""
    templates = registry.templates if isinstance(registry, TemplateRegistry) else registry
    routes = route_table(templates.values())
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _template_operation(route)
    paths.update(_fixed_paths())
    schemas: dict[str, Any] = {
        name: _record_schema(template)
        for name, template in sorted(templates.items())
        if any(r.template.name == name for r in routes)
    }
    schemas["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "pattern": "^BEDS-[0-9]{3}[A-Z]?$"},
            "details": {"type": "array", "items": {"type": "string"}},
            "instance": {"type": "string"},
            "trace_id": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail", "code", "instance", "trace_id"],
    }
    schemas["Ticket"] = {
        "type": "object",
        "properties": {
            "ticket": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["queued", "running", "succeeded", "failed", "cancelled"],
            },
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "BEDS HTTP API",
            "version": _version(),
            "description": "Generated from the installed BEDS template declarations.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A BEDS session token (POST /v1/auth/login) or an "
                    "identity provider's access token",
                }
            },
        },
    }
    if settings.public_url:
        document["servers"] = [{"url": settings.public_url}]
    return document


def _version() -> str:
    try:
        return metadata.version("beds-http")
    except metadata.PackageNotFoundError:
        return "0"


def docs_page(document: Mapping[str, Any]) -> str:
    """A self-contained HTML page listing every operation of ``document``."""
    rows = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            params = ", ".join(
                f"{p['name']}{'' if p.get('required') else '?'}"
                for p in operation.get("parameters", [])
            )
            codes = ", ".join(code for code in operation["responses"] if code != "default")
            rows.append(
                "<tr>"
                f"<td><code>{html.escape(method.upper())}</code></td>"
                f"<td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(operation.get('summary', ''))}</td>"
                f"<td>{html.escape(params)}</td>"
                f"<td>{html.escape(codes)}</td>"
                "</tr>"
            )
    title = html.escape(f"{document['info']['title']} {document['info']['version']}")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{title}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:"
        "collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;"
        "vertical-align:top}</style></head><body>"
        f"<h1>{title}</h1><p>The machine-readable document is "
        '<a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Errors are '
        "<code>application/problem+json</code>.</p>"
        "<table><thead><tr><th>Method</th><th>Path</th><th>Summary</th><th>Parameters</th>"
        "<th>Success</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>"
    )
