"""The route table, generated from the installed template declarations, and its endpoints.

One :class:`RouteSpec` per HTTP operation a template offers: ``POST /v1/{t}`` (create),
``PATCH /v1/{t}`` (update), ``DELETE /v1/{t}?key=…`` (delete), ``GET /v1/{t}/{query}`` (one per
query a request may name, ``history`` of journaled templates included; internal queries have
no route) and ``POST /v1/{t}/submit`` (templates with long operations). The OpenAPI document
(:mod:`beds_http.openapi`) is written from the same table, so the two cannot disagree.

Query-string params are typed by the field their condition compares: a value that cannot be
that type, an unknown or missing param, or a ``limit`` outside ``[1:max_limit]`` is refused
here (``BEDS-422``, one line per problem, key paths as the node writes them); a list param
(``op = "in"``) is a repeated query parameter. A param the node binds to the caller
(``principal``) is not a query-string param. Bodies (create, update, submit) are checked for
shape and size only: the node validates them against the template.

Why this module is long: the route table and the endpoints that serve it are one thing (each
endpoint reads its route's typed params), and keeping them together keeps the params the
edge accepts and the ones the OpenAPI document lists from drifting apart.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson
from loguru import logger

from beds.envelopes import Operation
from beds.templates.model import FieldSpec, FieldType, FilterOp, QuerySpec, Template
from beds.templates.validate import history_query
from beds_http.forward import Forwarder, bearer_token, json_response
from beds_http.limits import read_object
from beds_http.problems import EdgeRefusal
from beds_http.trace import idempotency_key

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Mapping

    from starlette.requests import Request
    from starlette.responses import Response as HttpResponse


__all__ = (
    "RESERVED_NAMES",
    "RESERVED_PARAMS",
    "Param",
    "RouteSpec",
    "TemplateEndpoints",
    "check_cursor",
    "route_table",
)

RESERVED_NAMES: Final = frozenset({"auth", "tickets", "events"})
"""First path segments the edge uses itself: a template of such a name gets no routes."""
RESERVED_PARAMS: Final = ("limit", "cursor", "consistency")
"""Query-string names of a fetch that are not the query's params."""
_CURSOR: Final = re.compile(r"^[A-Za-z0-9_.=-]{1,4096}$")
_INT: Final = re.compile(r"^-?[0-9]{1,19}$")
_CONSISTENCY: Final = ("primary", "secondary", "cached")
_SHOWN: Final = 40
"""Characters of a bad value quoted back in an error."""


@attrs.frozen
class Param:
    """A query-string param of a route."""

    name: str
    type: FieldType
    many: bool = False
    """A list: the parameter is repeated (``?tag=a&tag=b``)."""
    required: bool = True
    field: FieldSpec | None = None


@attrs.frozen
class RouteSpec:
    """One generated route."""

    method: str
    path: str
    operation: Operation
    template: Template
    status: int
    """The HTTP status of success."""
    query: QuerySpec | None = None
    params: tuple[Param, ...] = ()
    summary: str = ""

    @property
    def operation_id(self) -> str:
        """The OpenAPI ``operationId``."""
        suffix = f"_{self.query.name}" if self.query is not None else ""
        return f"{self.template.name}_{self.operation.value}{suffix}"


def _param(template: Template, name: str, field_name: str, *, many: bool, required: bool) -> Param:
    spec = template.fields.get(field_name)
    kind = spec.type if spec is not None else FieldType.STR
    return Param(name=name, type=kind, many=many, required=required, field=spec)


def _query_params(template: Template, query: QuerySpec) -> tuple[Param, ...]:
    params = []
    for name in query.params:
        if name == query.principal:
            continue  # the node binds it to the caller
        condition = query.condition(name)
        field = condition.field if condition.field in template.fields else name
        params.append(
            _param(template, name, field, many=condition.op is FilterOp.IN, required=True)
        )
    return tuple(params)


def _queries(template: Template) -> list[QuerySpec]:
    queries = [q for q in template.queries.values() if not q.internal]
    history = history_query(template)
    if history is not None and history.name not in template.queries:
        queries.append(history)
    return sorted(queries, key=lambda q: q.name)


def route_table(templates: Iterable[Template]) -> list[RouteSpec]:
    """Every generated route of ``templates``, in a stable order (by template, then path)."""
    routes: list[RouteSpec] = []
    for template in sorted(templates, key=lambda t: t.name):
        if template.name in RESERVED_NAMES:
            logger.warning(
                "template {} has no HTTP routes: /v1/{} is the edge's own",
                template.name,
                template.name,
            )
            continue
        base = f"/v1/{template.name}"
        ops = template.operations
        if Operation.CREATE in ops:
            routes.append(
                RouteSpec(
                    method="POST",
                    path=base,
                    operation=Operation.CREATE,
                    template=template,
                    status=201,
                    summary=f"Create a {template.name} record",
                )
            )
        if Operation.UPDATE in ops:
            routes.append(
                RouteSpec(
                    method="PATCH",
                    path=base,
                    operation=Operation.UPDATE,
                    template=template,
                    status=200,
                    summary=f"Update a {template.name} record by its key",
                )
            )
        if Operation.DELETE in ops:
            spec = ops[Operation.DELETE]
            params = tuple(
                _param(template, name, name, many=False, required=name in template.key)
                for name in spec.params
                if name != spec.principal
            )
            routes.append(
                RouteSpec(
                    method="DELETE",
                    path=base,
                    operation=Operation.DELETE,
                    template=template,
                    status=200,
                    params=params,
                    summary=f"Delete a {template.name} record by its key",
                )
            )
        if template.long_operations:
            routes.append(
                RouteSpec(
                    method="POST",
                    path=f"{base}/submit",
                    operation=Operation.SUBMIT,
                    template=template,
                    status=202,
                    summary=f"Submit a long operation of {template.name} for a ticket",
                )
            )
        for query in _queries(template):
            if query.name == "submit" and template.long_operations:
                logger.warning("query {}.submit has no GET route: it is the submit path", template)
            routes.append(
                RouteSpec(
                    method="GET",
                    path=f"{base}/{query.name}",
                    operation=Operation.FETCH,
                    template=template,
                    status=200,
                    query=query,
                    params=_query_params(template, query),
                    summary=f"Fetch {template.name} records with query {query.name}",
                )
            )
    return routes


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _value(param: Param, text: str, at: str) -> tuple[Any, str | None]:
    """``text`` as ``param``'s type, or the problem line."""
    kind = param.type
    if kind in (FieldType.STR, FieldType.DATETIME, FieldType.DECIMAL):
        return text, None
    if kind is FieldType.INT:
        if _INT.fullmatch(text):
            return int(text), None
        return None, f"{at}: must be an integer, got {_shown(text)}"
    if kind is FieldType.FLOAT:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number, None
        return None, f"{at}: must be a finite number, got {_shown(text)}"
    if kind is FieldType.BOOL:
        if text in ("true", "false"):
            return text == "true", None
        return None, f"{at}: must be true or false, got {_shown(text)}"
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError:
        return None, f"{at}: must be JSON text, got {_shown(text)}"


def typed_params(
    params: tuple[Param, ...], given: Mapping[str, list[str]], at: str, problems: list[str]
) -> dict[str, Any]:
    """The query-string values of ``params``, typed; problems are appended to ``problems``."""
    known = {p.name for p in params}
    for name in sorted(set(given) - known):
        problems.append(f"{at}.{name}: is not a param of this route")
    values: dict[str, Any] = {}
    for param in params:
        texts = given.get(param.name)
        if not texts:
            if param.required:
                problems.append(f"{at}.{param.name}: is required")
            continue
        if not param.many and len(texts) > 1:
            problems.append(f"{at}.{param.name}: must be given once")
            continue
        typed = []
        for text in texts:
            value, problem = _value(param, text, f"{at}.{param.name}")
            if problem is not None:
                problems.append(problem)
            typed.append(value)
        values[param.name] = typed if param.many else typed[0]
    return values


def check_cursor(text: str) -> str:
    """A cursor as sent back by the client.

    Raises:
        EdgeRefusal: it cannot be a cursor this edge handed out (``BEDS-400``); the node checks
            its signature.
    """
    if not _CURSOR.fullmatch(text):
        raise EdgeRefusal("BEDS-400", "cursor is not a cursor BEDS handed out", reason="cursor")
    return text


def _query_items(request: Request) -> dict[str, list[str]]:
    items: dict[str, list[str]] = {}
    for name, value in request.query_params.multi_items():
        items.setdefault(name, []).append(value)
    return items


def _invalid(problems: list[str]) -> EdgeRefusal:
    return EdgeRefusal(
        "BEDS-422", "the query string does not match the route", reason="params", details=problems
    )


@attrs.define
class TemplateEndpoints:
    """Builds the endpoint of each generated route."""

    forward: Forwarder

    def endpoint(self, spec: RouteSpec) -> Callable[[Request], Coroutine[Any, Any, HttpResponse]]:
        """The Starlette endpoint serving ``spec``."""
        handlers = {
            Operation.CREATE: self._write,
            Operation.UPDATE: self._write,
            Operation.DELETE: self._delete,
            Operation.FETCH: self._fetch,
            Operation.SUBMIT: self._submit,
        }
        handler = handlers[spec.operation]

        async def serve(request: Request) -> HttpResponse:
            request.scope["beds_route"] = spec.path
            return await handler(spec, request)

        return serve

    async def _write(self, spec: RouteSpec, request: Request) -> HttpResponse:
        token = bearer_token(request)
        key = idempotency_key(request.headers.get("idempotency-key"))
        if request.query_params:
            raise _invalid(["$.query: create and update take the record as the body"])
        record = await read_object(request, self.forward.settings)
        response = await self.forward.call(
            request, spec.template.name, spec.operation, record, token=token, idempotency_key=key
        )
        return json_response({"data": response.data}, spec.status)

    async def _delete(self, spec: RouteSpec, request: Request) -> HttpResponse:
        token = bearer_token(request)
        key = idempotency_key(request.headers.get("idempotency-key"))
        problems: list[str] = []
        values = typed_params(spec.params, _query_items(request), "$.query", problems)
        if problems:
            raise _invalid(problems)
        response = await self.forward.call(
            request, spec.template.name, spec.operation, values, token=token, idempotency_key=key
        )
        return json_response({"data": response.data}, spec.status)

    async def _submit(self, spec: RouteSpec, request: Request) -> HttpResponse:
        token = bearer_token(request)
        key = idempotency_key(request.headers.get("idempotency-key"))
        body = await read_object(request, self.forward.settings)
        if set(body) - {"operation", "params"} or not isinstance(body.get("operation"), str):
            raise EdgeRefusal(
                "BEDS-422",
                'the body must be {"operation": NAME, "params": {...}}',
                reason="body",
            )
        response = await self.forward.call(
            request, spec.template.name, spec.operation, body, token=token, idempotency_key=key
        )
        return json_response({"data": response.data}, spec.status)

    async def _fetch(self, spec: RouteSpec, request: Request) -> HttpResponse:
        assert spec.query is not None
        token = bearer_token(request)
        given = _query_items(request)
        payload: dict[str, Any] = {"query": spec.query.name}
        problems: list[str] = []
        limit = given.pop("limit", None)
        if limit is not None:
            if len(limit) == 1 and _INT.fullmatch(limit[0]):
                payload["limit"] = int(limit[0])
                if not 1 <= payload["limit"] <= spec.query.max_limit:
                    problems.append(f"$.query.limit: must be in [1:{spec.query.max_limit}]")
            else:
                problems.append("$.query.limit: must be one integer")
        cursor = given.pop("cursor", None)
        if cursor is not None:
            if len(cursor) != 1:
                problems.append("$.query.cursor: must be given once")
            else:
                payload["cursor"] = check_cursor(cursor[0])
        consistency = given.pop("consistency", None)
        if consistency is not None:
            if len(consistency) == 1 and consistency[0] in _CONSISTENCY:
                payload["consistency"] = consistency[0]
            else:
                problems.append(f"$.query.consistency: must be one of {', '.join(_CONSISTENCY)}")
        payload["params"] = typed_params(spec.params, given, "$.query", problems)
        if problems:
            raise _invalid(problems)
        response = await self.forward.call(
            request, spec.template.name, Operation.FETCH, payload, token=token
        )
        return json_response({"data": response.data, "meta": {"next": response.meta.next}})
