"""The production policy: what a production node refuses, decided from its configuration alone.

Checked at the very start of IPL, before any connection is made, so a node never even tries a
connection the policy forbids (and the tests of the policy never connect anywhere):

- RabbitMQ's ``guest`` account (RabbitMQ lets it log in from loopback only; it is shared by
  every default installation);
- a database URL without a password (``stores.rel.url`` and its ``secondaries``);
- a plaintext connection to a host that is not loopback: ``amqp://`` (not ``amqps://``),
  MariaDB and MongoDB URLs without TLS. A host name other than ``localhost`` counts as not
  loopback: nothing is resolved.

Production refuses to start on any finding (the ``policy`` line of the checklist names them
all); development logs them as one warning, so a developer learns what production would
refuse, and its checklist is unchanged.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import attrs

if TYPE_CHECKING:
    from beds.config.model import Config

__all__ = ("Finding", "findings", "is_loopback")

_TLS_QUERY = {"tls", "ssl"}
"""URL query options that turn TLS on for MongoDB (``tls=true``, ``ssl=true``)."""


@attrs.frozen
class Finding:
    """One thing the production policy refuses, by the configuration key that says it."""

    key: str
    problem: str


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine, without asking any resolver.

    ``localhost`` or a loopback address; an absent host means a local socket.
    """
    if not host:
        return True
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def findings(config: Config) -> list[Finding]:
    """What the production policy refuses in ``config`` (empty: nothing)."""
    found: list[Finding] = []
    amqp = urlsplit(config.amqp.url)
    if (amqp.username or "guest") == "guest":
        found.append(
            Finding(
                "amqp.url",
                "logs in as RabbitMQ's guest account: give each role its own user "
                "(docs/security.md)",
            )
        )
    if amqp.scheme == "amqp" and not is_loopback(amqp.hostname):
        found.append(Finding("amqp.url", f"is plaintext AMQP to {amqp.hostname}: use amqps://"))
    found += _rel(config.stores.get("rel", {}))
    found += _rec(config.stores.get("rec", {}))
    return found


def _rel(table: dict[str, Any]) -> list[Finding]:
    found = []
    urls = [("stores.rel.url", table.get("url"))]
    secondaries = table.get("secondaries")
    if isinstance(secondaries, list):
        urls += [(f"stores.rel.secondaries[{n}]", url) for n, url in enumerate(secondaries)]
    for key, url in urls:
        if not isinstance(url, str):
            continue  # the adapter's settings refuse it with their own message
        parts = urlsplit(url)
        if not parts.password and not table.get("password"):
            found.append(Finding(key, "has no password: give the role a database account"))
        if not is_loopback(parts.hostname):
            found.append(
                Finding(
                    key,
                    f"is a plaintext connection to {parts.hostname}: MariaDB over TLS is not "
                    "supported yet, so keep the database on this machine or reach it through "
                    "a TLS tunnel",
                )
            )
    return found


def _rec(table: dict[str, Any]) -> list[Finding]:
    uri = table.get("uri")
    if not isinstance(uri, str):
        return []
    parts = urlsplit(uri)
    query = {name.lower(): values for name, values in parse_qs(parts.query).items()}
    tls = any(query.get(name, ["false"])[-1].lower() == "true" for name in _TLS_QUERY)
    if parts.scheme == "mongodb+srv" or tls:
        return []  # mongodb+srv turns TLS on by default
    hosts = [host.rsplit(":", 1)[0] for host in parts.netloc.rpartition("@")[2].split(",")]
    remote = [host for host in hosts if not is_loopback(host)]
    if not remote:
        return []
    return [
        Finding(
            "stores.rec.uri",
            f"is a plaintext connection to {', '.join(remote)}: add tls=true",
        )
    ]
