"""beds-rec: the REC store of BEDS, MongoDB through pymongo's ``AsyncMongoClient``.

Install it next to ``beds-core``; the node finds it through the ``beds`` entry point ``rec``.
"""

from importlib.metadata import PackageNotFoundError, version

from beds_rec.adapter import RecAdapter as RecAdapter
from beds_rec.settings import RecSettings as RecSettings
from beds_rec.settings import parse_settings as parse_settings

try:
    __version__ = version("beds-rec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ("RecAdapter", "RecSettings", "__version__", "parse_settings")
