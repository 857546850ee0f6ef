"""The production policy: what a production node refuses, decided from its configuration alone.

Checked at the very start of IPL, before any connection is made, so a node never even tries a
connection the policy forbids (and the tests of the policy never connect anywhere):

- RabbitMQ's ``guest`` account (RabbitMQ lets it log in from loopback only; it is shared by
  every default installation);
- a database URL without a password (``stores.rel.url`` and its ``secondaries``);
- a plaintext connection to a host that is not loopback: ``amqp://`` (not ``amqps://``),
  MariaDB and MongoDB URLs without TLS. A host name other than ``localhost`` counts as not
  loopback: nothing is resolved;
- events forwarded to syslog in plaintext (UDP or TCP, ``syslog.target``) to a host that is not
  loopback, by a role with a ``syslog`` broker: send them to a relay on the machine (rsyslog)
  that forwards them over TLS;
- internal events believed from anyone: empty ``control.trusted_users``, or empty
  ``lineage.trusted_users`` on a role that stores lineage or forwards it to syslog
  (docs/security.md, trusted origins);
- page cursors signed with the development key (``reads.cursor_secret`` unset);
- a private key file any user can read (TLS client keys, the token signing key), and an
  identity provider's verification key shorter than its algorithm needs (RSA under 2048 bits,
  EC under 256). BEDS signs its own tokens with Ed25519 only, whose keys have one size.

Production refuses to start on any finding (the ``policy`` line of the checklist names them
all); development logs them as one warning, so a developer learns what production would
refuse, and its checklist is unchanged.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, urlsplit

import attrs

from beds.config.model import syslog_endpoint
from beds.config.stores import connection_name, connection_table, databases_of

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
    # Every broker of the list: one plaintext link to another machine is enough to leak.
    listed = bool(config.amqp.urls)
    for index, address in enumerate(config.amqp.addresses):
        broker = urlsplit(address)
        if broker.scheme == "amqp" and not is_loopback(broker.hostname):
            key = f"amqp.urls[{index}]" if listed else "amqp.url"
            found.append(Finding(key, f"is plaintext AMQP to {broker.hostname}: use amqps://"))
    # Every connection of each store: its default one and each named database (whose table
    # inherits the default's keys, so a password or TLS table set there counts for it too).
    for store, check in (("rel", _rel), ("rec", _rec)):
        for database in ("", *databases_of(config.stores, store)):
            table = connection_table(config.stores, connection_name(store, database))
            key = f"stores.{store}" + (f".databases.{database}" if database else "")
            found += check(table or {}, key)
    found += _trust(config)
    found += _syslog(config)
    found += _key_files(config)
    if not config.reads.cursor_secret:
        found.append(
            Finding(
                "reads.cursor_secret",
                "is empty: page cursors would be signed with a key derived from the "
                "environment's name, which anyone can compute; set a secret",
            )
        )
    return found


def _rel(table: dict[str, Any], key: str = "stores.rel") -> list[Finding]:
    found = []
    urls = [(f"{key}.url", table.get("url"))]
    secondaries = table.get("secondaries")
    if isinstance(secondaries, list):
        urls += [(f"{key}.secondaries[{n}]", url) for n, url in enumerate(secondaries)]
    # A [stores.rel.tls] table turns TLS on for url and every secondary (beds_rel.settings).
    tls = table.get("tls")
    unverified: list[str] = []
    for url_key, url in urls:
        if not isinstance(url, str):
            continue  # the adapter's settings refuse it with their own message
        parts = urlsplit(url)
        if not parts.password and not table.get("password"):
            found.append(Finding(url_key, "has no password: give the role a database account"))
        if is_loopback(parts.hostname):
            continue
        if not isinstance(tls, dict):
            found.append(
                Finding(url_key, f"is a plaintext connection to {parts.hostname}: add [{key}.tls]")
            )
        elif tls.get("verify_identity") is False:
            unverified.append(str(parts.hostname))
    if unverified:
        found.append(
            Finding(
                f"{key}.tls.verify_identity",
                f"is false, so the certificate of {', '.join(unverified)} is not checked against "
                "the host name: address the server by a name its certificate holds",
            )
        )
    return found


def _rec(table: dict[str, Any], key: str = "stores.rec") -> list[Finding]:
    uri = table.get("uri")
    if not isinstance(uri, str):
        return []
    if isinstance(table.get("tls"), dict):
        return []  # [stores.rec.tls] turns TLS on (beds-rec refuses it with a TLS-off URI)
    parts = urlsplit(uri)
    query = {name.lower(): values[-1].lower() for name, values in parse_qs(parts.query).items()}
    switches = [query[name] for name in _TLS_QUERY if name in query]
    # mongodb+srv turns TLS on by default, and so does a TLS file option (pymongo).
    implied = parts.scheme == "mongodb+srv" or bool(
        {"tlscafile", "tlscertificatekeyfile"} & set(query)
    )
    if "true" in switches or (implied and not switches):
        return []
    hosts = [
        # "[::1]:27017" is an IPv6 host with a port; "db:27017" a name with one.
        host.partition("]")[0].lstrip("[") if host.startswith("[") else host.rsplit(":", 1)[0]
        for host in parts.netloc.rpartition("@")[2].split(",")
    ]
    remote = [host for host in hosts if not is_loopback(host)]
    if not remote:
        return []
    return [
        Finding(
            f"{key}.uri",
            f"is a plaintext connection to {', '.join(remote)}: add tls=true or a "
            f"[{key}.tls] table",
        )
    ]


def _trust(config: Config) -> list[Finding]:
    """Internal events believed from anyone: the trusted origins are not named."""
    found = []
    if config.control.enabled and not config.control.trusted_users:
        found.append(
            Finding(
                "control.trusted_users",
                "is empty: any AMQP user of the vhost could revoke sessions or send other "
                "control events; name the roles' accounts",
            )
        )
    # Syslog brokers believe the same users as logs brokers (beds.broker.batches).
    reads_events = any(b.type in ("logs", "syslog") for b in config.brokers.values())
    if reads_events and not config.lineage.trusted_users:
        found.append(
            Finding(
                "lineage.trusted_users",
                "is empty: any AMQP user of the vhost could write lineage and audit records "
                "(and syslog messages); name the roles' accounts",
            )
        )
    return found


def _syslog(config: Config) -> list[Finding]:
    """Events that would cross the network in plaintext to a syslog receiver."""
    if not any(b.type == "syslog" for b in config.brokers.values()):
        return []
    endpoint = syslog_endpoint(config.syslog.target)
    if endpoint is None or is_loopback(endpoint[1]):
        return []  # no target: IPL refuses the syslog broker with its own message
    transport, host, _ = endpoint
    return [
        Finding(
            "syslog.target",
            f"is plaintext syslog ({transport}) to {host}: send to a relay on this machine "
            "(rsyslog, syslog-ng) that forwards over TLS (docs/telemetry.md, Syslog)",
        )
    ]


_MIN_BITS: Final = {"RSA": 2048, "EC": 256}
"""The least key size each JWK key type needs for the algorithms BEDS accepts."""


def _key_files(config: Config) -> list[Finding]:
    """Private keys others can read, and verification keys too short for their algorithm."""
    found = []
    private: list[tuple[str, object]] = [
        ("amqp.tls.key_file", config.amqp.tls.key_file or config.amqp.tls.cert_file)
    ]
    for store in ("rel", "rec"):
        tls = config.stores.get(store, {}).get("tls")
        if isinstance(tls, dict):
            path = tls.get("key_file") or tls.get("cert_file")
            private.append((f"stores.{store}.tls.key_file", path))
    if config.auth.keys_dir:
        signing = Path(config.auth.keys_dir) / f"{config.auth.signing_key_id}.pem"
        private.append(("auth.keys_dir", str(signing)))
    for key, path in private:
        if isinstance(path, str) and path and _world_readable(path):
            found.append(
                Finding(key, f"{path} holds a private key that any user can read: chmod o-r")
            )
    if config.auth.oidc.jwks_file:
        found += _short_keys(config.auth.oidc.jwks_file)
    return found


def _world_readable(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False  # missing or unreadable: the component that reads it says so


def _short_keys(path: str) -> list[Finding]:
    try:
        keys = json.loads(Path(path).read_text(encoding="utf-8")).get("keys", [])
    except (OSError, ValueError, AttributeError):
        return []  # the OIDC verifier reports an unreadable set with its own message
    found = []
    for key in keys if isinstance(keys, list) else []:
        bits = _bits(key) if isinstance(key, dict) else None
        least = _MIN_BITS.get(key.get("kty", "")) if isinstance(key, dict) else None
        if bits is not None and least is not None and bits < least:
            found.append(
                Finding(
                    "auth.oidc.jwks_file",
                    f"key {key.get('kid', '?')!r} is {key['kty']} of {bits} bits: "
                    f"at least {least} are needed",
                )
            )
    return found


def _bits(key: dict[str, Any]) -> int | None:
    """The size of a JWK's key, from its modulus (RSA) or curve (EC)."""
    if key.get("kty") == "RSA" and isinstance(key.get("n"), str):
        modulus = base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4))
        return int.from_bytes(modulus, "big").bit_length()
    if key.get("kty") == "EC":
        return {"P-256": 256, "P-384": 384, "P-521": 521}.get(key.get("crv", ""), 0)
    return None
