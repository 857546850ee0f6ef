"""BEDS: AMQP-first data back ends. The public API of ``beds-core``.

Everything an application, a plugin author or a test imports is here (docs/api.md):

- calling BEDS: :class:`BedsClient`;
- every error BEDS raises, :class:`BedsError` and its tree (:mod:`beds.errors`);
- templates: :class:`Template` and the classes it is made of;
- writing plugins and adapters: :data:`hookimpl`, the registries, :class:`NamasteCore` and the
  values it takes;
- embedding a node in an asyncio application: :class:`BedsNode`, :func:`load_config` and
  :func:`make_plugin_manager`;
- testing: :class:`MemoryAdapter`.

The errors are imported with ``beds``; every other name is imported the first time it is used,
so ``import beds`` stays cheap (the ``beds`` command and a client do not pay for the node).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from loguru import logger

from beds.errors import (
    BedsError as BedsError,
)
from beds.errors import (
    BrokerUnavailable as BrokerUnavailable,
)
from beds.errors import (
    ConfigError as ConfigError,
)
from beds.errors import (
    Conflict as Conflict,
)
from beds.errors import (
    DatabaseObjectMissing as DatabaseObjectMissing,
)
from beds.errors import (
    DeadlineExceeded as DeadlineExceeded,
)
from beds.errors import (
    HandlerStopped as HandlerStopped,
)
from beds.errors import (
    IdempotencyKeyReused as IdempotencyKeyReused,
)
from beds.errors import (
    InternalError as InternalError,
)
from beds.errors import (
    MalformedRequest as MalformedRequest,
)
from beds.errors import (
    NotConfigured as NotConfigured,
)
from beds.errors import (
    NotFound as NotFound,
)
from beds.errors import (
    PayloadTooLarge as PayloadTooLarge,
)
from beds.errors import (
    PluginError as PluginError,
)
from beds.errors import (
    PublishError as PublishError,
)
from beds.errors import (
    ReplyTimeout as ReplyTimeout,
)
from beds.errors import (
    ReplyUndeliverable as ReplyUndeliverable,
)
from beds.errors import (
    RequestError as RequestError,
)
from beds.errors import (
    StaleVersion as StaleVersion,
)
from beds.errors import (
    StoreBusy as StoreBusy,
)
from beds.errors import (
    StoreError as StoreError,
)
from beds.errors import (
    StoreUnavailable as StoreUnavailable,
)
from beds.errors import (
    TemplateError as TemplateError,
)
from beds.errors import (
    TicketAbandoned as TicketAbandoned,
)
from beds.errors import (
    TicketExpired as TicketExpired,
)
from beds.errors import (
    TicketFinished as TicketFinished,
)
from beds.errors import (
    TooManyAttempts as TooManyAttempts,
)
from beds.errors import (
    TransportError as TransportError,
)
from beds.errors import (
    Unauthenticated as Unauthenticated,
)
from beds.errors import (
    Unauthorized as Unauthorized,
)
from beds.errors import (
    UnknownTemplate as UnknownTemplate,
)
from beds.errors import (
    UnsupportedOperation as UnsupportedOperation,
)
from beds.errors import (
    UntrustedOrigin as UntrustedOrigin,
)
from beds.errors import (
    ValidationFailed as ValidationFailed,
)
from beds.errors import (
    WriteInDoubt as WriteInDoubt,
)

if TYPE_CHECKING:
    from beds.client import BedsClient as BedsClient
    from beds.config import Config as Config
    from beds.config import load_config as load_config
    from beds.namaste import CallContext as CallContext
    from beds.namaste import NamasteCore as NamasteCore
    from beds.namaste import Query as Query
    from beds.namaste import Record as Record
    from beds.namaste import SchemaFile as SchemaFile
    from beds.namaste import StoreSettings as StoreSettings
    from beds.node import BedsNode as BedsNode
    from beds.nodeinfo import Check as Check
    from beds.nodeinfo import NodeInfo as NodeInfo
    from beds.nodeinfo import StartupError as StartupError
    from beds.plugins import hookimpl as hookimpl
    from beds.plugins import make_plugin_manager as make_plugin_manager
    from beds.registry import AdapterRegistry as AdapterRegistry
    from beds.registry import TemplateRegistry as TemplateRegistry
    from beds.templates import AccessRules as AccessRules
    from beds.templates import Capabilities as Capabilities
    from beds.templates import FieldSpec as FieldSpec
    from beds.templates import FieldType as FieldType
    from beds.templates import OperationSpec as OperationSpec
    from beds.templates import QuerySpec as QuerySpec
    from beds.templates import Template as Template
    from beds.testing import MemoryAdapter as MemoryAdapter

    __version__: str

__all__ = (
    "AccessRules",
    "AdapterRegistry",
    "BedsClient",
    "BedsError",
    "BedsNode",
    "BrokerUnavailable",
    "CallContext",
    "Capabilities",
    "Check",
    "Config",
    "ConfigError",
    "Conflict",
    "DatabaseObjectMissing",
    "DeadlineExceeded",
    "FieldSpec",
    "FieldType",
    "HandlerStopped",
    "IdempotencyKeyReused",
    "InternalError",
    "MalformedRequest",
    "MemoryAdapter",
    "NamasteCore",
    "NodeInfo",
    "NotConfigured",
    "NotFound",
    "OperationSpec",
    "PayloadTooLarge",
    "PluginError",
    "PublishError",
    "Query",
    "QuerySpec",
    "Record",
    "ReplyTimeout",
    "ReplyUndeliverable",
    "RequestError",
    "SchemaFile",
    "StaleVersion",
    "StartupError",
    "StoreBusy",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "Template",
    "TemplateError",
    "TemplateRegistry",
    "TicketAbandoned",
    "TicketExpired",
    "TicketFinished",
    "TooManyAttempts",
    "TransportError",
    "Unauthenticated",
    "Unauthorized",
    "UnknownTemplate",
    "UnsupportedOperation",
    "UntrustedOrigin",
    "ValidationFailed",
    "WriteInDoubt",
    "__version__",
    "hookimpl",
    "load_config",
    "make_plugin_manager",
)

_LAZY: dict[str, str] = {
    "AccessRules": "beds.templates",
    "AdapterRegistry": "beds.registry",
    "BedsClient": "beds.client",
    "BedsNode": "beds.node",
    "CallContext": "beds.namaste",
    "Capabilities": "beds.templates",
    "Check": "beds.nodeinfo",
    "Config": "beds.config",
    "FieldSpec": "beds.templates",
    "FieldType": "beds.templates",
    "MemoryAdapter": "beds.testing",
    "NamasteCore": "beds.namaste",
    "NodeInfo": "beds.nodeinfo",
    "OperationSpec": "beds.templates",
    "Query": "beds.namaste",
    "QuerySpec": "beds.templates",
    "Record": "beds.namaste",
    "SchemaFile": "beds.namaste",
    "StartupError": "beds.nodeinfo",
    "StoreSettings": "beds.namaste",
    "Template": "beds.templates",
    "TemplateRegistry": "beds.registry",
    "hookimpl": "beds.plugins",
    "load_config": "beds.config",
    "make_plugin_manager": "beds.plugins",
}
"""Public name → the module that defines it, imported on first use (PEP 562)."""


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("beds-core")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0.0.0"
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'beds' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# A library adds no log sinks: the application (or the beds command) enables "beds" logging.
logger.disable("beds")
