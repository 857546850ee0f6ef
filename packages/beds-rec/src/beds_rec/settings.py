"""The REC store's configuration table, ``[stores.rec]``.

=============================  ==========================================================
key                            meaning
=============================  ==========================================================
``uri``                        ``mongodb://`` or ``mongodb+srv://`` URI; absent or
                               ``"embedded"`` starts an embedded SecantusDB server
``database``                   database name (required)
``server_selection_timeout``   seconds to find a usable server (default 5)
``embedded_path``              storage folder of the embedded server
                               (default ``.beds/secantus``, relative to the working directory)
``idempotency``                honour idempotency keys (default true; needs the
                               ``beds_idempotency`` collection, which ``beds schema apply``
                               creates)
``[stores.rec.tls]``           present: TLS on, the server's certificate and host name
                               always checked
``tls.ca_file``                PEM file of the CAs that sign the server's certificate
                               (default: the system's CAs)
``tls.cert_file``              PEM file holding the client certificate *and* its private
                               key (unencrypted), when the server asks for one
``tls.key_file``               refused: pymongo reads the key from ``cert_file``
``migration_url``              the DBA account's ``mongodb://`` URI, only for the schema
                               migration ticket (``beds schema migrate``); the same
                               ``database`` is used; a secret, like ``uri``
=============================  ==========================================================

The table is structured with cattrs like the rest of the configuration
(:func:`beds.config.structure_table`): every problem raises :class:`~beds.errors.ConfigError`
``stores.rec.<key>: <problem>`` naming the file and the key path. Messages never repeat the URI,
because it may hold a password.

TLS is on with a ``[stores.rec.tls]`` table, or with ``tls=true`` (or ``ssl=true``, or a
``mongodb+srv://`` URI) in the URI, not both. The table's files are checked here, before any
connection (:func:`beds.transport.tls.client_context`): a missing, unreadable or non-PEM file,
an expired client certificate, or a ``cert_file`` without its key is a ``ConfigError`` naming
``stores.rec.tls.<key>``. The files of the URI's ``tlsCAFile`` and ``tlsCertificateKeyFile``
are checked the same way, naming ``stores.rec.uri``. The server's certificate is always
verified: the URI options that turn that off (``tlsInsecure``, ``tlsAllowInvalidCertificates``,
``tlsAllowInvalidHostnames``) are refused, and the table offers none.

Why one file for the client certificate and its key: pymongo's ``tlsCertificateKeyFile`` is
the only way to give it a client certificate, and it reads the key from the same file (as
mongod's ``--tlsCertificateKeyFile`` does). Joining two files would mean writing the private
key somewhere else, so ``key_file`` is refused with a message that says how to join them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

import attrs
from pymongo.errors import ConfigurationError
from pymongo.uri_parser import parse_uri

from beds.config import FieldValueError, structure_table
from beds.errors import ConfigError
from beds.transport.tls import check_client_certificate, client_context

if TYPE_CHECKING:
    from beds.namaste import StoreSettings

__all__ = ("EMBEDDED", "TLS_KEY", "RecSettings", "RecTlsSettings", "parse_settings")

EMBEDDED = "embedded"
"""The ``uri`` value (or its absence) that selects the embedded server."""

# MongoDB forbids these characters in database names (and the name must fit in 63 bytes).
_DATABASE = re.compile(r'^[^/\\. "$*<>:|?\x00]{1,63}$')

TLS_KEY = "stores.rec.tls"
"""The key path of the TLS table, named by every error about it."""

_TLS_OPTIONS = {"tls", "ssl"}
"""URI options that turn TLS on or off (``tls=true``)."""
_TLS_FILE_OPTIONS = {"tlscafile": "tlsCAFile", "tlscertificatekeyfile": "tlsCertificateKeyFile"}
"""URI options naming a file (lower case, as matched, to their spelling, as named)."""
_INSECURE_OPTIONS = {
    "tlsinsecure": "tlsInsecure",
    "tlsallowinvalidcertificates": "tlsAllowInvalidCertificates",
    "tlsallowinvalidhostnames": "tlsAllowInvalidHostnames",
}
"""URI options that turn the server's certificate check off: BEDS always makes it."""


def _no_key_file(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value:
        raise FieldValueError(
            attribute.name,
            "is not supported: pymongo reads the client certificate and its private key from "
            f"one file, so put both in {TLS_KEY}.cert_file (cat client.crt client.key > "
            "client.pem; chmod 600 client.pem) and remove key_file",
        )


_CREDENTIALS = re.compile(r"(?<=://)([^:@/]*):[^@/]*@")


def redact_uri(uri: str) -> str:
    """``repr`` of a MongoDB URI with its password replaced by ``***`` (settings reach logs)."""
    return repr(_CREDENTIALS.sub(r"\1:***@", uri, count=1))


@attrs.frozen(kw_only=True)
class RecTlsSettings:
    """The ``[stores.rec.tls]`` table (a :class:`beds.transport.tls.TlsFiles`)."""

    ca_file: str = ""
    """PEM file of the CAs that sign the server's certificate; empty: the system's CAs."""
    cert_file: str = ""
    """PEM file holding the client certificate and its (unencrypted) private key; may be empty."""
    key_file: str = attrs.field(default="", validator=_no_key_file)
    """Always empty: pymongo reads the key from ``cert_file`` (see the module docstring)."""


@attrs.frozen(kw_only=True)
class RecSettings:
    """Validated REC store settings."""

    uri: str | None = attrs.field(repr=lambda uri: redact_uri(uri) if uri else repr(uri))
    """The server's URI, or ``None`` for the embedded server (its password is not in repr)."""
    database: str
    server_selection_timeout: float = 5.0
    """Seconds the driver waits for a usable server before failing."""
    embedded_path: Path = Path(".beds/secantus")
    """Where the embedded server keeps its data."""
    idempotency: bool = True
    """Whether writes honour idempotency keys (collection ``beds_idempotency``)."""
    production: bool = False
    tls: RecTlsSettings | None = None
    """The ``[stores.rec.tls]`` table, if present (TLS on, with its files)."""
    uri_tls: bool = False
    """Whether the URI itself turns TLS on (``tls=true``, ``mongodb+srv://``)."""
    migration_uri: str | None = attrs.field(default=None, repr=False)
    """The DBA's URI (``migration_url``) to the same ``database``; ``None``: not configured.
    Only the migration ticket uses it."""

    @property
    def tls_key(self) -> str | None:
        """The key that turned TLS on (``stores.rec.tls`` or ``stores.rec.uri``); ``None``: off."""
        if self.tls is not None:
            return TLS_KEY
        return "stores.rec.uri" if self.uri_tls else None

    @property
    def embedded(self) -> bool:
        """Whether the adapter starts its own embedded server."""
        return self.uri is None


def parse_settings(settings: StoreSettings) -> RecSettings:
    """Validate a ``[stores.rec]`` table.

    Args:
        settings: the table as the node read it.

    Returns:
        The settings with defaults applied.

    Raises:
        ConfigError: an unknown key, a missing ``database`` or a bad value, or a TLS file that
            cannot be used; names the key path (``stores.rec.database``,
            ``stores.rec.tls.ca_file``) and the file.
    """
    tls = settings.options.get("tls")
    if tls is not None and not isinstance(tls, Mapping):
        raise ConfigError(
            f"{TLS_KEY}: must be a table ([stores.rec.tls]), got {type(tls).__name__}",
            file=settings.file,
            key=TLS_KEY,
        )
    table = structure_table(settings.options, _Table, key=settings.key, file=settings.file)
    uri = None if table.uri == EMBEDDED else table.uri
    uri_tls = uri is not None and _uri_tls(uri)
    if table.tls is not None:
        _check_tls(table.tls, uri, file=settings.file)
    return RecSettings(
        uri=uri,
        idempotency=table.idempotency,
        database=table.database,
        server_selection_timeout=table.server_selection_timeout,
        embedded_path=Path(table.embedded_path),
        production=settings.production,
        tls=table.tls,
        uri_tls=bool(uri_tls),
        migration_uri=table.migration_url,
    )


def _check_tls(tls: RecTlsSettings, uri: str | None, *, file: str | None) -> None:
    """Refuse a ``[stores.rec.tls]`` the client cannot use, before any connection."""
    if uri is None:
        raise ConfigError(
            f"{TLS_KEY}: the embedded server listens on 127.0.0.1 without TLS; set "
            "stores.rec.uri to a MongoDB server that speaks TLS, or remove the table",
            file=file,
            key=TLS_KEY,
        )
    given = sorted(
        _TLS_FILE_OPTIONS.get(name, name)
        for name in _uri_options(uri)
        if name in _TLS_OPTIONS | {*_TLS_FILE_OPTIONS}
    )
    if given:
        raise ConfigError(
            f"{TLS_KEY}: TLS is also set in stores.rec.uri ({', '.join(given)}); "
            "keep one of the two",
            file=file,
            key=TLS_KEY,
        )
    try:
        if tls.cert_file:
            key = f"{TLS_KEY}.cert_file"
            check_client_certificate(tls.cert_file, key=key)
            _check_private_key(tls.cert_file, key=key)
        client_context(tls, key=TLS_KEY)
    except ConfigError as exc:
        raise _with_file(exc, file) from None


def _check_private_key(path: str, *, key: str, encrypted: bool = False) -> None:
    """The file that holds the client certificate must hold its key too, unencrypted.

    An encrypted key would make OpenSSL ask for its passphrase on the terminal, and a node
    started from one would wait there; ``encrypted``: the URI gives the passphrase
    (``tlsCertificateKeyFilePassword``).
    """
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"{path} cannot be used: {exc.strerror}", key=key) from None
    if "ENCRYPTED" in text and not encrypted:
        raise ConfigError(
            f"{path} holds an encrypted private key, which would need a passphrase: "
            "keep the key unencrypted in a file only the node can read",
            key=key,
        )
    if "PRIVATE KEY-----" not in text:
        raise ConfigError(
            f"{path} holds no private key: pymongo reads the client certificate and its key "
            "from one file, so append the key to it (cat client.crt client.key > client.pem; "
            "chmod 600 client.pem)",
            key=key,
        )


def _with_file(exc: ConfigError, file: str | None) -> ConfigError:
    """``exc`` (from :mod:`beds.transport.tls`, which knows no file) as ``"<key>: …"`` with file."""
    return ConfigError(f"{exc.key}: {_problem(exc)}", file=file, key=exc.key)


def _problem(exc: ConfigError) -> str:
    """The message of a ``ConfigError`` without its ``(key …)`` suffix."""
    return str(exc).removesuffix(f" (key {exc.key})")


def _uri_options(uri: str) -> dict[str, str]:
    """The URI's options, names in lower case (MongoDB option names ignore case)."""
    try:
        query = urlsplit(uri).query
    except ValueError:
        return {}
    return {name.lower(): value for name, value in parse_qsl(query)}


def _uri_tls(uri: str) -> bool:
    """Whether the URI turns TLS on: ``tls``/``ssl``, a TLS file option, or ``mongodb+srv``."""
    options = _uri_options(uri)
    switches = [options[name].lower() for name in _TLS_OPTIONS if name in options]
    if switches:
        return "true" in switches
    return uri.startswith("mongodb+srv://") or any(name in options for name in _TLS_FILE_OPTIONS)


def _check_uri_tls(name: str, uri: str) -> None:
    """Refuse URI options that skip the server's certificate check, and unusable TLS files."""
    options = _uri_options(uri)
    for option, spelled in _INSECURE_OPTIONS.items():
        if options.get(option, "false").lower() != "false":
            raise FieldValueError(
                name,
                f"turns the server's certificate check off ({spelled}); BEDS always verifies "
                f"the server: give its CA in {TLS_KEY}.ca_file instead",
            )
    for option, spelled in _TLS_FILE_OPTIONS.items():
        path = options.get(option)
        if not path:
            continue
        try:
            if option == "tlscafile":
                client_context(RecTlsSettings(ca_file=path), key=name)
            else:
                check_client_certificate(path, key=name)
                passphrase = "tlscertificatekeyfilepassword" in options
                _check_private_key(path, key=name, encrypted=passphrase)
        except ConfigError as exc:
            raise FieldValueError(name, f"option {spelled}: {_problem(exc)}") from None


def _uri(instance: _Table, attribute: attrs.Attribute[str], uri: str) -> None:
    if uri == EMBEDDED:
        return
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise FieldValueError(
            attribute.name, f"must start with mongodb:// or mongodb+srv://, or be {EMBEDDED!r}"
        )
    _check_uri_tls(attribute.name, uri)  # first: the parser opens tlsCAFile, and says less
    if not uri.startswith("mongodb+srv://"):  # parsing an SRV URI resolves DNS: not here
        try:
            parse_uri(uri, warn=False)
        except (ConfigurationError, ValueError, OSError) as exc:
            # The driver's message may quote the URI, which can hold a password: keep it out.
            raise FieldValueError(
                attribute.name, f"is not a valid MongoDB URI ({type(exc).__name__})"
            ) from None


def _migration_uri(
    instance: _Table, attribute: attrs.Attribute[str | None], uri: str | None
) -> None:
    if uri is None:
        return
    if uri == EMBEDDED:
        raise FieldValueError(attribute.name, "must be a mongodb:// or mongodb+srv:// URI")
    _uri(instance, attribute, uri)  # type: ignore[arg-type]  # the same checks as uri's


def _database(instance: _Table, attribute: attrs.Attribute[str], value: str) -> None:
    if not _DATABASE.match(value):
        raise FieldValueError(
            attribute.name, 'must be a MongoDB database name (no / \\ . space " $ characters)'
        )


def _positive(instance: _Table, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise FieldValueError(attribute.name, "must be a positive number of seconds")


def _path(instance: _Table, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise FieldValueError(attribute.name, "must be a non-empty path")


@attrs.frozen(kw_only=True)
class _Table:
    """The ``[stores.rec]`` table as written (see the module's table of keys)."""

    uri: str = attrs.field(default=EMBEDDED, validator=_uri, repr=redact_uri)
    database: str = attrs.field(validator=_database)
    server_selection_timeout: float = attrs.field(default=5.0, validator=_positive)
    embedded_path: str = attrs.field(default=".beds/secantus", validator=_path)
    idempotency: bool = True
    tls: RecTlsSettings | None = None
    migration_url: str | None = attrs.field(default=None, validator=_migration_uri, repr=False)


_KEYS: tuple[str, ...] = (
    *(field.name for field in attrs.fields(_Table)),
    *(f"tls.{field.name}" for field in attrs.fields(RecTlsSettings)),
)
"""The table's keys (``tls.ca_file`` for the sub-table's), for the documentation's check."""
