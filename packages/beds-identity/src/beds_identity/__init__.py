"""BEDS identity: users and sessions as templates, argon2id passwords, session tokens.

The templates ``beds_user`` and ``beds_session`` and their DBA schema ship as package data;
:mod:`beds_identity.users` and :mod:`beds_identity.sessions` are their handlers
(:mod:`beds.handlers`). docs/identity.md is the contract.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beds-identity")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ("__version__",)
