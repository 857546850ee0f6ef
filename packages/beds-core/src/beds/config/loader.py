"""Layered configuration: defaults ← ``beds.toml`` ← ``env_{BEDS_ENV}.toml`` ← environment.

Tables merge deeply; any other value is replaced by the later layer. Environment variables
``BEDS__SECTION__KEY=value`` set single keys (``__`` separates levels; matched to existing keys
case-insensitively; the value is read as a TOML value when it parses as one, else as text), so
secrets never need to be in a file. Every error names the file and the dotted key path.

Why this module is long: the layers (files, variables, secret files) and the checks that
compare them (schema version, passwords in production, ``amqp.url`` against ``amqp.urls``)
all need the map of which layer set each key, which only this merge builds.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs

from beds.config.defaults import DEFAULTS, DEVELOPMENT_STORES
from beds.config.model import CONFIG_SCHEMA_VERSION, NAME, Config
from beds.config.stores import DATABASES, check_databases, connection_files
from beds.config.structure import config_error, converter
from beds.errors import ConfigError

__all__ = ("ENV_PREFIX", "load_config")

ENV_PREFIX = "BEDS__"
_DEFAULTS_ORIGIN = "<built-in defaults>"
_ENV_ORIGIN = "<environment>"
_TOMLLIB_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOMLLIB_END = re.compile(r"\s*\(at end of document\)$")


def _parse_error(exc: tomllib.TOMLDecodeError, text: str, path: Path) -> ConfigError:
    """A TOML syntax error naming the file, line and column, with the line and a caret as notes.

    tomllib's ``TOMLDecodeError`` gives the 1-based position in its message, or says the
    document ended early; an invalid value is named by the character found there.
    """
    message = str(exc)
    lines = text.splitlines()
    reason: str
    if (match := _TOMLLIB_POSITION.search(message)) is not None:
        line, column = int(match[1]), int(match[2])
        reason = message[: match.start()].rstrip(". ") or "syntax error"
        source = lines[line - 1] if 1 <= line <= len(lines) else ""
        if reason == "Invalid value":
            reason = (
                f"Unexpected character: {source[column - 1]!r}"
                if column <= len(source)
                else "unexpected end of line"
            )
    elif (match := _TOMLLIB_END.search(message)) is not None:
        line, column = max(len(lines), 1), len(lines[-1]) + 1 if lines else 1
        reason = message[: match.start()].rstrip(". ")
        reason = (
            "unexpected end of file"
            if reason in {"", "Invalid value"}
            else f"unexpected end of file ({reason})"
        )
    else:
        return ConfigError(f"not valid TOML: {message}", file=str(path))
    error = ConfigError(f"not valid TOML: {reason} at line {line}, column {column}", file=str(path))
    if 1 <= line <= len(lines):
        source = lines[line - 1]
        gutter = f"{line} | "
        # Tabs stay tabs under the caret, so it lines up however the terminal shows them.
        indent = "".join("\t" if char == "\t" else " " for char in source[: column - 1])
        error.add_note(f"{gutter}{source}")
        error.add_note(f"{' ' * (len(gutter) - 2)}| {indent}^")
    return error


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", file=str(path)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _parse_error(exc, text, path) from exc


def _merge(
    base: MutableMapping[str, Any],
    layer: Mapping[str, Any],
    origins: dict[str, str],
    origin: str,
    prefix: str = "",
) -> None:
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), MutableMapping):
            _merge(base[key], value, origins, origin, f"{path}.")
        else:
            base[key] = copy.deepcopy(value)
            origins[path] = origin


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


_INDEX = re.compile(r"\[\d+\]$")
_FILE_SUFFIX = "_FILE"
_PATH_KEYS = frozenset({"ca_file", "cert_file", "key_file", "jwks_file"})
"""Keys whose value is a file's path (``amqp.tls.ca_file``): their variables set the path, so
``BEDS__AMQP__TLS__CA_FILE=/etc/beds/ca.pem`` works like the TOML key. Any other key's
``…_FILE`` variable names a secret file."""


def _read_secret(path: str, name: str, key: str) -> str:
    """The text of a secret file (Docker and Kubernetes secrets), without its final newline.

    Raises:
        ConfigError: the file cannot be read; names the variable and the key, never the value.
    """
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"environment variable {name} names a secret file that cannot be read: {reason}",
            file=f"{_ENV_ORIGIN} {name}",
            key=key,
        ) from None


def _apply_environment(
    data: dict[str, Any], origins: dict[str, str], environ: Mapping[str, str]
) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or len(name) == len(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        origin = f"{_ENV_ORIGIN} {name}"
        if not all(parts):
            raise ConfigError(
                f"environment variable {name} has an empty level: separate key names with '__'",
                file=origin,
            )
        table: dict[str, Any] = data
        path: list[str] = []
        from_file = (
            parts[-1].upper().endswith(_FILE_SUFFIX)
            and len(parts[-1]) > len(_FILE_SUFFIX)
            and parts[-1].lower() not in _PATH_KEYS
        )
        if from_file:  # BEDS__AMQP__URL_FILE=/run/secrets/amqp_url: the key's value in a file
            parts[-1] = parts[-1][: -len(_FILE_SUFFIX)]
        for depth, part in enumerate(parts):
            existing = {k.lower(): k for k in table}
            key = existing.get(part.lower(), part.lower())
            path.append(key)
            if depth == len(parts) - 1:
                table[key] = (
                    _read_secret(environ[name], name, ".".join(path))
                    if from_file
                    else _parse_env_value(environ[name])
                )
            else:
                nested = table.setdefault(key, {})
                if not isinstance(nested, dict):
                    raise ConfigError(
                        f"environment variable {name} sets a key below a non-table value",
                        file=origin,
                        key=".".join(path),
                    )
                table = nested
        origins[".".join(path)] = origin


def _origin_of(path: str, origins: Mapping[str, str]) -> str:
    path = _INDEX.sub("", path)  # amqp.urls[2] was set with amqp.urls
    while path:
        if path in origins:
            return origins[path]
        path = path.rpartition(".")[0]
    return _DEFAULTS_ORIGIN


def _structure(data: dict[str, Any], origins: Mapping[str, str]) -> Config:
    try:
        return converter.structure(data, Config)
    except cattrs.BaseValidationError as exc:
        raise config_error(exc, "", lambda key: _origin_of(key, origins)) from exc


def _layer(origin: str, files: list[str]) -> int:
    """How late a layer comes: built-in defaults 0, then each file, then the environment."""
    if origin in files:
        return files.index(origin) + 1
    return 0 if origin == _DEFAULTS_ORIGIN else len(files) + 1


def _broker_urls(data: dict[str, Any], origins: dict[str, str], files: list[str]) -> None:
    """Settle ``amqp.url`` against ``amqp.urls``: one of the two, a later layer replacing.

    A string ``amqp.urls`` (``BEDS__AMQP__URLS`` or its ``_FILE`` secret) lists URLs separated
    by whitespace, or is a TOML array. Both keys set by one layer is an error naming both and
    where they were set; set by different layers, the later one wins (as for any key), so an
    ``env_prod.toml`` may list a cluster where ``beds.toml`` names one broker.

    Raises:
        ConfigError: both keys set in the same layer.
    """
    amqp = data.get("amqp")
    if not isinstance(amqp, dict) or "urls" not in amqp:
        return
    if isinstance(amqp["urls"], str):
        text = amqp["urls"].strip()
        parsed = _parse_env_value(text) if text.startswith("[") else None
        amqp["urls"] = parsed if isinstance(parsed, list) else text.split()
    if "url" not in amqp:
        return
    url_origin, urls_origin = _origin_of("amqp.url", origins), _origin_of("amqp.urls", origins)
    url_layer, urls_layer = _layer(url_origin, files), _layer(urls_origin, files)
    if url_layer == urls_layer:
        where = url_origin if url_origin == urls_origin else f"{url_origin} and {urls_origin}"
        raise ConfigError(
            "amqp.url and amqp.urls are both set; give one: amqp.urls lists every broker of a "
            f"cluster, amqp.url names one (both in {where})",
            file=urls_origin,
            key="amqp.urls",
        )
    if url_layer > urls_layer:
        del amqp["urls"]
    else:
        del amqp["url"]


def _refuse_secrets_in_base_file(
    data: Mapping[str, Any], origins: Mapping[str, str], base: str
) -> None:
    """In production a password in the checked-in base file is an error: secrets come from env."""
    amqp = data.get("amqp", {})
    urls = {"amqp.url": amqp.get("url")}
    listed = amqp.get("urls")
    if isinstance(listed, list):
        urls.update({f"amqp.urls[{index}]": url for index, url in enumerate(listed)})
    for store, table in data.get("stores", {}).items():
        named = table.get(DATABASES, {})
        tables = {f"stores.{store}": table}
        tables.update({f"stores.{store}.{DATABASES}.{name}": t for name, t in named.items()})
        for path, connection in tables.items():
            for key in ("url", "uri", "password", "migration_url"):
                if key in connection:
                    urls[f"{path}.{key}"] = connection[key]
    for key, value in sorted(urls.items()):
        if _origin_of(key, origins) != base or not isinstance(value, str):
            continue
        try:
            has_secret = key.endswith(("password", "secret")) or bool(urlsplit(value).password)
        except ValueError:
            continue  # not a URL: the store's adapter refuses it, naming the key
        if has_secret:
            variable = _INDEX.sub("", key).upper().replace(".", "__")
            raise ConfigError(
                f"{key}: holds a password; in production secrets come from the environment "
                f"(set BEDS__{variable}) or env_{{BEDS_ENV}}.toml",
                file=base,
                key=key,
            )


def _node_table(data: dict[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    """The merged ``[node]`` table, which the loader reads and sets before validating the rest."""
    node = data.setdefault("node", {})
    if not isinstance(node, dict):
        raise ConfigError("node: must be a table", file=_origin_of("node", origins), key="node")
    return node


def _check_schema_version(version: object, origin: str) -> None:
    """The file's format version must be the one this BEDS reads (docs/configuration.md)."""
    reads = CONFIG_SCHEMA_VERSION
    # bool is an int subclass, but `schema_version = true` is no version.
    if not isinstance(version, int) or isinstance(version, bool):
        problem = (
            f"schema_version: must be an integer, got {version!r}; this BEDS reads version {reads}"
        )
    elif version < reads:
        problem = (
            f"schema_version: version {version} is older than version {reads}, which this BEDS "
            f'reads: migrate the file to version {reads} (docs/configuration.md, "Schema versions")'
        )
    elif version > reads:
        problem = (
            f"schema_version: version {version} is unknown to this BEDS, which reads version "
            f"{reads}: this BEDS is too old for the file; upgrade BEDS, or write the file for "
            f"version {reads}"
        )
    else:
        return
    raise ConfigError(problem, file=origin, key="schema_version")


def default_config_path() -> Path | None:
    """``BEDS_CONFIG`` if set, else ``./beds.toml`` if it exists, else ``None`` (dev default)."""
    named = os.environ.get("BEDS_CONFIG")
    if named:
        return Path(named)
    local = Path("beds.toml")
    return local if local.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    role: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge and validate a node's configuration.

    Args:
        path: the base file (``beds.toml``); ``None`` means the development default node, which
            serves the installed templates on local RabbitMQ and MariaDB.
        role: overrides ``node.role`` (``beds run --node``).
        environ: the environment to read ``BEDS_ENV`` and ``BEDS__*`` from (default ``os.environ``).

    Raises:
        ConfigError: naming the file and the key path of the first problem; the others are
            attached as an exception note.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = copy.deepcopy(DEFAULTS)
    origins: dict[str, str] = {}
    files: list[str] = []
    if path is None:
        _merge(data, {"stores": DEVELOPMENT_STORES}, origins, _DEFAULTS_ORIGIN)
    else:
        base = Path(path)
        files.append(str(base))
        base_data = _read_toml(base)
        if "schema_version" not in base_data:
            # Without it a file written for another format would be read as this one.
            raise ConfigError(
                f"schema_version: is required in the base file; this BEDS reads version "
                f"{CONFIG_SCHEMA_VERSION} (add schema_version = {CONFIG_SCHEMA_VERSION} at the "
                "top)",
                file=str(base),
                key="schema_version",
            )
        _merge(data, base_data, origins, str(base))
        env_name = environ.get("BEDS_ENV") or str(_node_table(data, origins).get("env", "dev"))
        env_file = base.with_name(f"env_{env_name}.toml") if NAME.fullmatch(env_name) else None
        # A bad name reads no file here: the node.env validator reports it, naming its origin.
        if env_file is not None and env_file.is_file():
            files.append(str(env_file))
            _merge(data, _read_toml(env_file), origins, str(env_file))
    if environ.get("BEDS_ENV"):
        _node_table(data, origins)["env"] = environ["BEDS_ENV"]
        origins["node.env"] = f"{_ENV_ORIGIN} BEDS_ENV"
    _apply_environment(data, origins, environ)
    if role is not None:
        _node_table(data, origins)["role"] = role
        origins["node.role"] = "<command line --node>"

    for reserved in ("files", "store_files"):
        if reserved in data:
            raise ConfigError(
                f"{reserved}: is not a known key", file=_origin_of(reserved, origins), key=reserved
            )
    _check_schema_version(data.get("schema_version"), _origin_of("schema_version", origins))
    _broker_urls(data, origins, files)
    config = _structure(data, origins)
    if config.node.role not in config.roles:
        raise ConfigError(
            f"unknown role {config.node.role!r}; known roles: {', '.join(sorted(config.roles))}",
            file=_origin_of("node.role", origins),
            key="node.role",
        )
    for name, table in config.stores.items():
        if not isinstance(table, dict):
            raise ConfigError(
                "must be a table", file=_origin_of(f"stores.{name}", origins), key=f"stores.{name}"
            )
    check_databases(config.stores, lambda key: _origin_of(key, origins))
    if config.production and files:
        _refuse_secrets_in_base_file(data, origins, files[0])
    store_files = connection_files(config.stores, lambda key: _origin_of(key, origins))
    return attrs.evolve(config, files=tuple(files), store_files=store_files)
