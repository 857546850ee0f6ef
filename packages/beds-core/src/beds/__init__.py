"""BEDS: AMQP-first data back ends. The public API of ``beds-core``."""

from importlib.metadata import PackageNotFoundError, version

from loguru import logger

from beds.errors import (
    BedsError as BedsError,
)
from beds.errors import (
    ConfigError as ConfigError,
)
from beds.errors import (
    PluginError as PluginError,
)
from beds.errors import (
    ReplyTimeout as ReplyTimeout,
)
from beds.errors import (
    RequestError as RequestError,
)
from beds.errors import (
    TemplateError as TemplateError,
)
from beds.plugins import hookimpl as hookimpl

try:
    __version__ = version("beds-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

# A library adds no log sinks: the application (or the beds command) enables "beds" logging.
logger.disable("beds")

__all__ = (
    "BedsError",
    "ConfigError",
    "PluginError",
    "ReplyTimeout",
    "RequestError",
    "TemplateError",
    "__version__",
    "hookimpl",
)
