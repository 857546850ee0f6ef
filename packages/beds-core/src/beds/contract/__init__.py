"""Machine-readable descriptions of the contracts BEDS serves, generated from the templates.

- :func:`asyncapi_document`: the AsyncAPI 3.0 document of the AMQP contract
  (``beds contract asyncapi``);
- :mod:`beds.contract.schemas`: the JSON Schemas of a template's fields, records and operation
  payloads, which every edge's document shares (beds-http's OpenAPI too);
- :mod:`beds.contract.envelopes`: the JSON Schemas of the v1 envelopes.
"""

from __future__ import annotations

from beds.contract.asyncapi import ASYNCAPI_VERSION, asyncapi_document
from beds.contract.schemas import field_schema, record_schema

__all__ = ("ASYNCAPI_VERSION", "asyncapi_document", "field_schema", "record_schema")
