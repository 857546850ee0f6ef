"""beds-http: the HTTP/SSE edge of BEDS (docs/http.md).

An AMQP client of BEDS like any other: REST routes, an OpenAPI document and live events,
generated at start-up from the installed template declarations; it never touches a database.
Run it with ``beds http``, or embed :func:`create_app` in any ASGI server.
"""

from __future__ import annotations

from beds_http.app import create_app
from beds_http.openapi import openapi_document
from beds_http.settings import HttpSettings, parse_settings

__all__ = ("HttpSettings", "create_app", "openapi_document", "parse_settings")
