"""Where the chat-completions endpoint is and how to call it, read from the environment.

``beds.toml`` refuses keys it does not know, and a plugin cannot add a table to it, so beds-ai
reads its own variables (none of them ``BEDS__…``, the configuration's prefix):

==========================  ===============================================================
``BEDS_AI_URL``             the endpoint's base URL (``…/v1``); ``/chat/completions`` is added
``BEDS_AI_MODEL``           the model name the endpoint knows
``BEDS_AI_KEY``             the API key, sent as ``Authorization: Bearer …`` (optional)
``BEDS_AI_KEY_FILE``        a file holding the key instead (Docker and Kubernetes secrets)
``BEDS_AI_TIMEOUT``         seconds to wait for one answer (default 120)
``BEDS_AI_RETRIES``         attempts after a connection error, a 429 or a 5xx (default 2)
==========================  ===============================================================

The key is kept out of ``repr`` and never put in a message: an error names the variable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs
import httpx

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("ENV", "AiSettings", "settings_from_env")

ENV: Final = {
    "url": "BEDS_AI_URL",
    "model": "BEDS_AI_MODEL",
    "key": "BEDS_AI_KEY",
    "key_file": "BEDS_AI_KEY_FILE",
    "timeout": "BEDS_AI_TIMEOUT",
    "retries": "BEDS_AI_RETRIES",
}
_ORIGIN = "environment variable"
_MAX_TIMEOUT = 3600.0
_MAX_RETRIES = 5


@attrs.frozen(kw_only=True)
class AiSettings:
    """One endpoint and model; ``key`` is never shown (``repr`` leaves it out)."""

    url: str
    """The base URL, ``http`` or ``https``, without credentials in it."""
    model: str
    key: str | None = attrs.field(default=None, repr=False)
    timeout: float = 120.0
    """Seconds one answer may take (reading it); connecting has its own 10 seconds."""
    retries: int = 2
    """Further attempts after a connection error, a 429 or a 5xx; never after a timeout."""
    backoff: float = 0.5
    """First wait between attempts in seconds, doubled each time (tests make it small)."""
    max_answer_bytes: int = 4 * 1024 * 1024
    """Largest HTTP body read from the endpoint; a larger one is refused, not parsed."""

    @property
    def completions_url(self) -> httpx.URL:
        """``{url}/chat/completions``, keeping the URL's query (``?api-version=…``)."""
        base = httpx.URL(self.url)
        return base.copy_with(path=base.path.rstrip("/") + "/chat/completions")


def _fail(variable: str, message: str) -> ConfigError:
    return ConfigError(f"{variable} {message}", file=f"{_ORIGIN} {variable}")


def _check_url(text: str) -> str:
    name = ENV["url"]
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError):
        raise _fail(name, "is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _fail(name, "must be an http:// or https:// URL with a host")
    if url.userinfo:
        # A password in the URL would be printed wherever the URL is: the key has its variable.
        raise _fail(name, f"must not hold credentials; put the key in {ENV['key']}")
    if url.fragment:
        raise _fail(name, "must not have a #fragment")
    return text


def _number(environ: Mapping[str, str], field: str, low: float, high: float) -> float | None:
    name = ENV[field]
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _fail(name, f"must be a number from {low:g} to {high:g}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _fail(name, f"must be a number from {low:g} to {high:g}")
    return value


def _key(environ: Mapping[str, str]) -> str | None:
    key = environ.get(ENV["key"], "")
    path = environ.get(ENV["key_file"], "")
    if key and path:
        raise _fail(ENV["key"], f"and {ENV['key_file']} are both set; set one")
    if path:
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise _fail(ENV["key_file"], f"names a file that cannot be read: {reason}") from None
        if not key:
            raise _fail(ENV["key_file"], "names an empty file")
    if any(ord(c) < 33 or ord(c) > 126 for c in key):
        # An HTTP header cannot carry it; say so without showing it.
        raise _fail(ENV["key_file"] if path else ENV["key"], "holds a character a key cannot have")
    return key or None


def settings_from_env(environ: Mapping[str, str]) -> AiSettings | None:
    """The endpoint the environment configures, or ``None`` when ``BEDS_AI_URL`` is unset.

    Raises:
        ConfigError: a variable is invalid (names the variable, never the key's value).
    """
    url = environ.get(ENV["url"], "").strip()
    if not url:
        return None
    model = environ.get(ENV["model"], "").strip()
    if not model:
        raise _fail(ENV["model"], f"is required when {ENV['url']} is set")
    if len(model) > 200 or any(ord(c) < 32 for c in model):
        raise _fail(ENV["model"], "must be a model name of at most 200 printable characters")
    timeout = _number(environ, "timeout", 0.1, _MAX_TIMEOUT)
    retries = _number(environ, "retries", 0, _MAX_RETRIES)
    if retries is not None and not retries.is_integer():
        raise _fail(ENV["retries"], f"must be a whole number from 0 to {_MAX_RETRIES}")
    settings = AiSettings(url=_check_url(url), model=model, key=_key(environ))
    if timeout is not None:
        settings = attrs.evolve(settings, timeout=timeout)
    if retries is not None:
        settings = attrs.evolve(settings, retries=int(retries))
    return settings
