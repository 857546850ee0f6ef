"""The AsyncAPI 3.0 document of the AMQP contract, generated from the installed templates.

What a client in another language needs to call BEDS with only an AMQP library
(docs/wire-contract.md), as a machine-readable document that AsyncAPI tools turn into clients:

- ``servers``: RabbitMQ, one per broker of ``amqp.urls`` (or ``amqp.url``), without user and
  password;
- ``channels``: one per routing key ``{template}.{class}`` on the events exchange (an AMQP
  ``routingKey`` binding naming the topic exchange), plus ``beds.read`` (ping),
  ``beds_ticket.read`` (tickets) and ``reply`` (direct reply-to); with ``live`` templates,
  ``record.changed`` and ``records.changed`` on the control exchange;
- ``operations``: one ``send`` per template operation (and per fetch query, per long
  operation), each with its ``reply`` through the caller's ``reply_to``; the live events are
  ``receive`` operations;
- ``components``: the envelopes, each template's record, the catalogue codes, and one message
  per request and reply, whose payload schemas come from :mod:`beds.contract.schemas`.

Operations, channels and messages are named from the template and operation
(``spew_post.create``, ``spew_post.fetch.by_author``), so the same installed templates always
give the same document.

Why this module is long: the document has one section per AsyncAPI object (servers, channels,
operations, messages, replies) and each is small, but they name one another, so they are built
together where those names are decided once.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from beds.calgon.tickets import TicketState
from beds.contract.batches import batch_payload_schema, batch_reply_schema
from beds.contract.envelopes import (
    error_code_schema,
    error_response_schema,
    request_meta_schema,
    request_schema,
    response_meta_schema,
    response_schema,
)
from beds.contract.live import record_changed_schema, records_changed_schema
from beds.contract.schemas import (
    fetch_payload_schema,
    record_schema,
    returns_schema,
    submit_payload_schema,
    write_payload_schema,
)
from beds.dispatch.calgon import TICKET_TEMPLATE
from beds.dispatch.live import RECORD_CHANGED, RECORDS_CHANGED
from beds.envelopes import MAX_META_BYTES, Operation
from beds.registry import TemplateRegistry
from beds.routing import PING_TEMPLATE, routing_key
from beds.templates.validate import history_query

if TYPE_CHECKING:
    from collections.abc import Mapping

    from beds.config.model import Config
    from beds.templates.model import Template

__all__ = ("ASYNCAPI_VERSION", "asyncapi_document")

ASYNCAPI_VERSION: Final = "3.0.0"
_BINDING: Final = "0.3.0"
"""The AMQP bindings version AsyncAPI 3.0.0 defines."""
_REPLY: Final = "reply"
_DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
_CONTENT_TYPE: Final = (
    "^"
    + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in "application/json")
    + "(;.*)?$"
)
"""``application/json`` in any case, maybe with parameters (ECMA-262 has no inline ``(?i)``)."""
_WRITES: Final = (Operation.CREATE, Operation.UPDATE, Operation.DELETE)
_MANY: Final = {
    Operation.CREATE: Operation.CREATE_MANY,
    Operation.UPDATE: Operation.UPDATE_MANY,
    Operation.DELETE: Operation.DELETE_MANY,
}
"""Each write's batch operation (docs/wire-contract.md, "Batches")."""
_STATUS: Final = {
    Operation.CREATE: 201,
    Operation.UPDATE: 200,
    Operation.DELETE: 200,
    Operation.FETCH: 200,
    Operation.SUBMIT: 202,
    Operation.TICKET: 200,
    Operation.PING: 200,
}


def _ref(*parts: str) -> dict[str, str]:
    # JSON Pointer escaping (RFC 6901): names never hold "~" or "/", but stay correct if one did.
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def _servers(config: Config) -> dict[str, dict[str, Any]]:
    """One server per broker URL: ``rabbitmq`` alone, or ``rabbitmq-1``… for a cluster."""
    addresses = config.amqp.addresses
    if len(addresses) == 1:
        return {"rabbitmq": _server(config, addresses[0])}
    return {
        f"rabbitmq-{number}": _server(config, url, f"node {number} of {len(addresses)}")
        for number, url in enumerate(addresses, start=1)
    }


def _server(config: Config, url: str, node: str = "") -> dict[str, Any]:
    """RabbitMQ from one broker URL: host, port and vhost only, never the credentials."""
    parts = urlsplit(url)
    secure = parts.scheme == "amqps"
    host = parts.hostname or "localhost"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = parts.port or (5671 if secure else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return {
        "host": f"{host}:{port}",
        "protocol": "amqps" if secure else "amqp",
        "protocolVersion": "0.9.1",
        "pathname": "/" if vhost == "/" else "/" + vhost,
        "title": f"RabbitMQ ({node} of the cluster)" if node else "RabbitMQ",
        "description": f"The BEDS environment {config.node.env!r} (virtual host {vhost!r}). "
        "Log in with the AMQP account of your role; send its user as the user_id property.",
        "security": [_ref("components", "securitySchemes", "amqp_user")],
    }


def _vhost(config: Config) -> str:
    path = urlsplit(config.amqp.url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _request_headers(config: Config) -> dict[str, Any]:
    """The AMQP properties and headers of a request (docs/wire-contract.md, "Publishing")."""
    short = {"type": "string", "maxLength": MAX_META_BYTES}
    return {
        "type": "object",
        "description": "AMQP properties (and the application headers table, headers) of a "
        "request. Publish with mandatory set, to the events exchange; the body is at most "
        f"{config.amqp.max_message_bytes} bytes (amqp.max_message_bytes).",
        "required": ["reply_to"],
        "properties": {
            "content_type": {
                "type": "string",
                "pattern": _CONTENT_TYPE,
                "description": "application/json, optionally with a charset; absent is read "
                "as JSON.",
            },
            "correlation_id": {
                **short,
                "description": "Unique among your pending calls; the reply carries it back.",
            },
            "reply_to": {
                **short,
                "minLength": 1,
                "description": f"{_DIRECT_REPLY_TO} (consume it no-ack, on the publishing "
                "channel, before publishing) or a queue of yours. Without it the request is "
                "dead-lettered.",
            },
            "message_id": {**short, "description": "Optional unique id of this message."},
            "expiration": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Milliseconds the request may wait in the queue.",
            },
            "user_id": {
                **short,
                "description": "Your AMQP user: RabbitMQ checks it, and the node takes it as "
                "the request's origin.",
            },
            "headers": {
                "type": "object",
                "properties": {
                    "authorization": {
                        "type": "string",
                        "pattern": "^Bearer .+$",
                        "maxLength": 8192,
                        "description": "Bearer <token>: a BEDS session token or an identity "
                        "provider's access token. Absent: anonymous.",
                    }
                },
            },
        },
    }


def _reply_headers() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "content_type": {"const": "application/json"},
            "correlation_id": {"type": "string", "description": "The request's, copied."},
            "message_id": {"type": "string", "description": "The response's meta.event_id."},
        },
    }


class _Builder:
    """Collects channels, operations and messages under the names they are referred to by."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        self.reply_messages: dict[str, Any] = {}

    def channel(self, address: str, description: str) -> str:
        """The channel of a routing key on the events exchange (made once)."""
        if address not in self.channels:
            self.channels[address] = {
                "address": address,
                "title": address,
                "description": description,
                "messages": {},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": self.config.amqp.events_exchange,
                            "type": "topic",
                            "durable": True,
                            "autoDelete": False,
                            "vhost": _vhost(self.config),
                        },
                        "bindingVersion": _BINDING,
                    }
                },
            }
        return address

    def request(
        self,
        *,
        name: str,
        channel: str,
        title: str,
        payload: dict[str, Any],
        reply_data: dict[str, Any],
        status: int,
        tags: list[str],
        description: str = "",
        reply_payload: dict[str, Any] | None = None,
    ) -> None:
        """One request message on ``channel``, its success reply, and the send operation."""
        key = name.split(".", 1)[1]  # template names hold no ".": the operation's part
        message: dict[str, Any] = {
            "name": name,
            "title": title,
            "contentType": "application/json",
            "correlationId": _ref("components", "correlationIds", "amqp"),
            "headers": _ref("components", "schemas", "RequestProperties"),
            "payload": payload,
            "bindings": {"amqp": {"messageType": name, "bindingVersion": _BINDING}},
        }
        if description:
            message["description"] = description
        self.messages[name] = message
        self.channels[channel]["messages"][key] = _ref("components", "messages", name)
        reply = f"{name}.reply"
        self.messages[reply] = {
            "name": reply,
            "title": f"{title}: the reply",
            "contentType": "application/json",
            "correlationId": _ref("components", "correlationIds", "amqp"),
            "headers": _ref("components", "schemas", "ReplyProperties"),
            "payload": reply_payload or response_schema(status, reply_data),
        }
        self.reply_messages[reply] = _ref("components", "messages", reply)
        self.operations[name] = {
            "action": "send",
            "channel": _ref("channels", channel),
            "title": title,
            "tags": [{"name": tag} for tag in tags],
            "messages": [_ref("channels", channel, "messages", key)],
            "bindings": {"amqp": {"mandatory": True, "bindingVersion": _BINDING}},
            "reply": {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "The request's reply_to property.",
                },
                "channel": _ref("channels", _REPLY),
                "messages": [
                    _ref("channels", _REPLY, "messages", reply),
                    _ref("channels", _REPLY, "messages", "error"),
                ],
            },
        }

    def template(self, template: Template) -> None:
        """The channels, messages and operations of one template's declared operations."""
        name = template.name
        self.schemas[name] = record_schema(template)
        record = _ref("components", "schemas", name)
        tags = [name]
        for operation in _WRITES:
            if operation not in template.operations:
                continue
            channel = self.channel(
                routing_key(name, operation),
                f"Writes of {name} (create, update, delete, one record or a batch).",
            )
            data = (
                {
                    "type": "object",
                    "required": ["deleted"],
                    "properties": {"deleted": {"type": "integer", "minimum": 1}},
                }
                if operation is Operation.DELETE
                else returns_schema(template, operation)
            )
            payload = write_payload_schema(template, operation)
            self.request(
                name=f"{name}.{operation.value}",
                channel=channel,
                title=f"{operation.value.capitalize()} a {name} record",
                payload=request_schema(operation, name, payload),
                reply_data=data,
                status=_STATUS[operation],
                tags=tags,
            )
            many = _MANY[operation]
            self.request(
                name=f"{name}.{many.value}",
                channel=channel,
                title=f"{operation.value.capitalize()} many {name} records (a batch)",
                payload=request_schema(
                    many, name, batch_payload_schema("records", payload, self.limit(template))
                ),
                reply_data=data,
                status=_STATUS[operation],
                tags=tags,
                reply_payload=batch_reply_schema(_STATUS[operation], data),
            )
        key_query = template.key_query()
        if key_query is not None and not key_query.internal:
            channel = self.channel(routing_key(name, Operation.FETCH), f"Reads of {name} (fetch).")
            keys = fetch_payload_schema(template, key_query)["properties"]["params"]
            consistency = fetch_payload_schema(template, key_query)["properties"]["consistency"]
            self.request(
                name=f"{name}.fetch_many",
                channel=channel,
                title=f"Fetch many {name} records by key (a batch)",
                payload=request_schema(
                    Operation.FETCH_MANY,
                    name,
                    batch_payload_schema(
                        "keys", keys, self.limit(template), {"consistency": consistency}
                    ),
                ),
                reply_data=record,
                status=_STATUS[Operation.FETCH],
                tags=tags,
                reply_payload=batch_reply_schema(_STATUS[Operation.FETCH], record),
            )
        queries = [q for q in template.queries.values() if not q.internal]
        history = history_query(template)
        if history is not None:
            queries.append(history)
        for query in queries:
            channel = self.channel(routing_key(name, Operation.FETCH), f"Reads of {name} (fetch).")
            default = " (the default query)" if query.name == template.default_query else ""
            self.request(
                name=f"{name}.fetch.{query.name}",
                channel=channel,
                title=f"Fetch {name} records with query {query.name}{default}",
                payload=request_schema(
                    Operation.FETCH, name, fetch_payload_schema(template, query)
                ),
                reply_data={"type": "array", "items": record, "maxItems": query.max_limit},
                status=_STATUS[Operation.FETCH],
                tags=tags,
            )
        for long_operation in template.long_operations.values():
            channel = self.channel(
                routing_key(name, Operation.SUBMIT),
                f"Long operations of {name} (submit, answered with a ticket).",
            )
            self.request(
                name=f"{name}.submit.{long_operation.name}",
                channel=channel,
                title=f"Submit {long_operation.name} of {name} for a ticket",
                description=long_operation.description,
                payload=request_schema(
                    Operation.SUBMIT, name, submit_payload_schema(long_operation)
                ),
                reply_data=_ref("components", "schemas", "Ticket"),
                status=_STATUS[Operation.SUBMIT],
                tags=tags,
            )

    def limit(self, template: Template) -> int:
        """The most items one batch of ``template`` carries on this configuration's nodes."""
        return template.batch.limit(self.config.amqp.max_batch_records)

    def built_in(self) -> None:
        """``ping`` (no store) and ``ticket`` (any template's ticket, by id)."""
        ping = self.channel(
            routing_key(PING_TEMPLATE, Operation.PING), "Ping: answered by a broker, no store."
        )
        self.request(
            name=f"{PING_TEMPLATE}.ping",
            channel=ping,
            title="Ping a node",
            payload=request_schema(
                Operation.PING,
                PING_TEMPLATE,
                {"type": "object", "maxProperties": 0},
            ),
            reply_data={
                "type": "object",
                "required": ["pong"],
                "properties": {"pong": {"type": "string", "description": "The node's name."}},
            },
            status=_STATUS[Operation.PING],
            tags=["beds"],
        )
        tickets = self.channel(
            routing_key(TICKET_TEMPLATE, Operation.TICKET), "Tickets of long operations."
        )
        page_size = self.config.calgon.page_size
        self.request(
            name=f"{TICKET_TEMPLATE}.ticket",
            channel=tickets,
            title="Read, page or cancel a ticket",
            payload=request_schema(
                Operation.TICKET,
                TICKET_TEMPLATE,
                {
                    "type": "object",
                    "required": ["ticket"],
                    "additionalProperties": False,
                    "properties": {
                        "ticket": {
                            "type": "string",
                            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                            "-[0-9a-f]{12}$",
                            "description": "The ticket id submit answered.",
                        },
                        "cancel": {"type": "boolean"},
                        "cursor": {
                            "type": ["string", "null"],
                            "description": "The previous page's meta.next.",
                        },
                        "limit": {"type": "integer", "minimum": 1, "maximum": page_size},
                    },
                },
            ),
            reply_data=_ref("components", "schemas", "Ticket"),
            status=_STATUS[Operation.TICKET],
            tags=["beds"],
        )

    def live(self, templates: list[Template]) -> None:
        """``record.changed`` and ``records.changed``: the live templates' writes, to receive."""
        if not templates:
            return
        names = ", ".join(template.name for template in templates)
        for kind, title, payload, what in (
            (
                RECORD_CHANGED,
                "A live template's record changed",
                record_changed_schema(templates),
                f"Each write of a live template ({names}), after it is answered.",
            ),
            (
                RECORDS_CHANGED,
                "A batch wrote records of a live template",
                records_changed_schema(templates),
                f"The written items of a batch of a live template ({names}), in item order, "
                "as many per event as fit: each item is what a record.changed carries.",
            ),
        ):
            self.channels[kind] = {
                "address": kind,
                "title": kind,
                "description": f"{what} Bind a queue of your own to the live exchange with "
                "this routing key, or read the environment's live stream.",
                "messages": {"event": _ref("components", "messages", kind)},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": self.config.amqp.live_exchange,
                            "type": "topic",
                            "durable": True,
                            "autoDelete": False,
                            "vhost": _vhost(self.config),
                        },
                        "bindingVersion": _BINDING,
                    }
                },
            }
            self.messages[kind] = {
                "name": kind,
                "title": title,
                "contentType": "application/json",
                "payload": payload,
            }
            self.operations[kind] = {
                "action": "receive",
                "channel": _ref("channels", kind),
                "title": f"Follow the writes of live templates ({kind})",
                "tags": [{"name": template.name} for template in templates],
                "messages": [_ref("channels", kind, "messages", "event")],
            }

    def reply_channel(self) -> None:
        self.reply_messages["error"] = _ref("components", "messages", "error")
        self.messages["error"] = {
            "name": "error",
            "title": "An error reply",
            "summary": "Any request may be answered with an error from the catalogue.",
            "contentType": "application/json",
            "correlationId": _ref("components", "correlationIds", "amqp"),
            "headers": _ref("components", "schemas", "ReplyProperties"),
            "payload": _ref("components", "schemas", "ErrorResponse"),
        }
        self.channels[_REPLY] = {
            "address": None,
            "title": "Replies",
            "description": "The reply_to of each request: RabbitMQ's direct reply-to "
            f"({_DIRECT_REPLY_TO}) or a queue of the caller's. The node publishes the reply "
            "to the default exchange with reply_to as its routing key.",
            "messages": dict(sorted(self.reply_messages.items())),
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": _DIRECT_REPLY_TO,
                        "exclusive": True,
                        "vhost": _vhost(self.config),
                    },
                    "bindingVersion": _BINDING,
                }
            },
        }


def _ticket_schema() -> dict[str, Any]:
    """A ticket as replies show it (``beds.dispatch.calgon.ticket_view``)."""
    text = {"type": "string"}
    time = {"type": ["string", "null"], "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    return {
        "type": "object",
        "required": ["ticket", "template", "operation", "state", "progress"],
        "properties": {
            "ticket": {**text, "description": "The ticket id."},
            "template": text,
            "operation": {**text, "description": "The long operation's name."},
            "params": {"type": "object"},
            "lane": text,
            "state": {"enum": [state.value for state in TicketState]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "steps": count,
            "steps_done": count,
            "attempts": count,
            "cancel_requested": {"type": "boolean"},
            "created_at": time,
            "started_at": time,
            "finished_at": time,
            "expires_at": time,
            "event_id": text,
            "error": {"type": ["object", "null"]},
        },
    }


def _version() -> str:
    try:
        return metadata.version("beds-core")
    except metadata.PackageNotFoundError:  # a source tree without metadata
        return "0"


def asyncapi_document(
    registry: TemplateRegistry | Mapping[str, Template], config: Config
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the AMQP contract of ``registry``'s templates.

    Args:
        registry: the templates (a loaded registry, or name → template).
        config: gives the servers (each broker URL without credentials), the events exchange,
            the body limit and the ticket page size.

    Returns:
        A JSON-ready dict (the official AsyncAPI 3.0.0 JSON Schema validates it).
    """
    templates: Mapping[str, Template] = (
        registry.templates if isinstance(registry, TemplateRegistry) else registry
    )
    builder = _Builder(config)
    for name in sorted(templates):
        builder.template(templates[name])
    builder.built_in()
    builder.live(
        [templates[name] for name in sorted(templates) if templates[name].capabilities.live]
    )
    builder.reply_channel()
    schemas = {
        "RequestMeta": request_meta_schema(),
        "ResponseMeta": response_meta_schema(),
        "ErrorCode": error_code_schema(),
        "ErrorResponse": error_response_schema(),
        "Request": request_schema(),
        "Response": response_schema(),
        "RequestProperties": _request_headers(config),
        "ReplyProperties": _reply_headers(),
        "Ticket": _ticket_schema(),
        **dict(sorted(builder.schemas.items())),
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "BEDS AMQP contract",
            "version": _version(),
            "description": "Requests and replies of BEDS wire contract v1 (docs/wire-contract.md) "
            "for the installed templates. Publish a request to the events exchange with the "
            "routing key {template}.{class}; the reply comes to your reply_to with the same "
            "correlation_id.",
            "tags": [{"name": name} for name in sorted(templates)],
        },
        "defaultContentType": "application/json",
        "servers": _servers(config),
        "channels": dict(sorted(builder.channels.items())),
        "operations": dict(sorted(builder.operations.items())),
        "components": {
            "schemas": schemas,
            "messages": dict(sorted(builder.messages.items())),
            "correlationIds": {
                "amqp": {
                    "description": "The AMQP correlation_id property, copied into the reply.",
                    "location": "$message.header#/correlation_id",
                }
            },
            "securitySchemes": {
                "amqp_user": {
                    "type": "userPassword",
                    "description": "The RabbitMQ account of the caller's role.",
                }
            },
        },
    }
