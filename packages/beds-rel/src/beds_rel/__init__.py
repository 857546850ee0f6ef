"""beds-rel: the REL store of BEDS, MariaDB/MySQL stored procedures, views and functions.

Install it next to ``beds-core``; the node finds it through the ``beds`` entry point ``rel``.
"""

from importlib.metadata import PackageNotFoundError, version

from beds_rel.adapter import RelAdapter as RelAdapter
from beds_rel.errors import map_exceptions as map_exceptions
from beds_rel.schema import Statement as Statement
from beds_rel.schema import split_statements as split_statements
from beds_rel.settings import RelSettings as RelSettings
from beds_rel.settings import parse_settings as parse_settings

try:
    __version__ = version("beds-rel")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = (
    "RelAdapter",
    "RelSettings",
    "Statement",
    "__version__",
    "map_exceptions",
    "parse_settings",
    "split_statements",
)
