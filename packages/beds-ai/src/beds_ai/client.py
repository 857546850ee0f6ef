"""A client of one OpenAI-compatible ``POST {url}/chat/completions`` endpoint.

It asks for a JSON answer that follows a JSON Schema (``response_format`` of type
``json_schema``, strict); an endpoint that refuses that (a 400 or 422, as servers without
structured outputs answer) is asked again, and from then on, for a plain JSON object
(``json_object``), the schema then being in the prompt. A connection error, a 429 or a 5xx is
tried again a bounded number of times with a growing wait (tenacity); a timeout is not, since the
model may still be working and a second call would pay twice. The body read is bounded, and no
message it raises quotes the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import orjson
import tenacity
from loguru import logger

from beds_ai.errors import AiUnavailable, redact

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from beds_ai.settings import AiSettings

__all__ = ("ChatClient", "json_schema_format")

_TRANSIENT = frozenset({429, 500, 502, 503, 504})
_SCHEMA_REFUSED = frozenset({400, 422})
_MAX_RETRY_AFTER = 30.0
_CONNECT_TIMEOUT = 10.0
JSON_OBJECT: Mapping[str, Any] = {"type": "json_object"}


def json_schema_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``response_format`` that asks for an answer following ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "beds_domain", "schema": dict(schema), "strict": True},
    }


class _Transient(Exception):
    """A failure worth another attempt; ``retry_after`` is the endpoint's wish, in seconds."""

    def __init__(self, message: str, status: int | None, retry_after: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(value, 0.0), _MAX_RETRY_AFTER)


def _error_text(body: bytes, key: str | None) -> str:
    """The endpoint's own error message (``{"error": {"message": …}}``), redacted."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return redact(body.decode("utf-8", "replace"), key)
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return redact(message if isinstance(message, str) else str(data), key)


class ChatClient:
    """Sends chat requests to the configured endpoint; use it as a context manager.

    Args:
        settings: URL, model, key, timeout and retries.
        transport: an httpx transport instead of the network (tests of one failure mode).
    """

    def __init__(
        self, settings: AiSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.structured = True
        """Whether the endpoint is still asked for ``json_schema`` (False after it refused)."""
        headers = {"accept": "application/json", "content-type": "application/json"}
        if settings.key:
            headers["authorization"] = f"Bearer {settings.key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(
                settings.timeout, connect=min(_CONNECT_TIMEOUT, settings.timeout)
            ),
            transport=transport,
            follow_redirects=False,  # a redirect would carry the key to another place
        )
        url = settings.completions_url
        self._where = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
        """The endpoint as messages name it: no query string (some hold tokens)."""

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any]) -> str:
        """The assistant's answer (its ``content``; ``""`` when it has none).

        Raises:
            AiUnavailable: the endpoint could not be reached, timed out, refused the request or
                answered something that is not a chat completion.
        """
        body: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [dict(m) for m in messages],
            "temperature": 0,
        }
        if self.structured:
            body["response_format"] = json_schema_format(schema)
            response = self._post(body)
            if response.status_code not in _SCHEMA_REFUSED:
                return self._content(response)
            logger.debug(
                "{} refused a json_schema response_format ({}); asking for json_object",
                self._where,
                response.status_code,
            )
            self.structured = False
        body["response_format"] = dict(JSON_OBJECT)
        return self._content(self._post(body))

    def _post(self, body: Mapping[str, Any]) -> httpx.Response:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(1 + self.settings.retries),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            reraise=True,
        )
        content = orjson.dumps(body)
        try:
            for attempt in retrying:
                with attempt:
                    return self._send(content)
        except _Transient as exc:
            tries = 1 + self.settings.retries
            raise AiUnavailable(
                f"{self._where}: {exc} (tried {tries} time{'s' if tries > 1 else ''})",
                status=exc.status,
            ) from None
        raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exponential: float = self.settings.backoff * 2.0 ** (state.attempt_number - 1)
        error = state.outcome.exception() if state.outcome is not None else None
        wished = error.retry_after if isinstance(error, _Transient) else None
        return max(exponential, wished or 0.0)

    def _send(self, content: bytes) -> httpx.Response:
        """One POST; the response with its body read (bounded)."""
        logger.debug("POST {} (model {})", self._where, self.settings.model)
        try:
            with self._http.stream("POST", self.settings.completions_url, content=content) as r:
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > self.settings.max_answer_bytes:
                        raise AiUnavailable(
                            f"{self._where}: the answer is larger than"
                            f" {self.settings.max_answer_bytes} bytes",
                            status=r.status_code,
                        )
                    chunks.append(chunk)
                response = httpx.Response(
                    r.status_code, headers=r.headers, content=b"".join(chunks)
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Transient(f"cannot connect ({type(exc).__name__})", None, None) from None
        except httpx.TimeoutException:
            raise AiUnavailable(
                f"{self._where}: no answer within {self.settings.timeout:g} s"
                " (raise BEDS_AI_TIMEOUT for a slow model)"
            ) from None
        except httpx.TransportError as exc:
            # The connection broke mid-answer: worth another attempt like a refused connect.
            raise _Transient(f"the connection failed ({type(exc).__name__})", None, None) from None
        if response.status_code in _TRANSIENT:
            raise _Transient(
                f"HTTP {response.status_code}: {_error_text(response.content, self.settings.key)}",
                response.status_code,
                _retry_after(response),
            )
        return response

    def _content(self, response: httpx.Response) -> str:
        status = response.status_code
        if status in (401, 403):
            # The endpoint's message may quote part of the key: name the variable instead.
            raise AiUnavailable(
                f"{self._where}: HTTP {status}: the endpoint refused the key"
                " (check BEDS_AI_KEY or BEDS_AI_KEY_FILE)",
                status=status,
            )
        if status != 200:
            raise AiUnavailable(
                f"{self._where}: HTTP {status}: {_error_text(response.content, self.settings.key)}",
                status=status,
            )
        try:
            data = orjson.loads(response.content)
            message = data["choices"][0]["message"]
            content = message.get("content")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise AiUnavailable(
                f"{self._where}: the answer is not a chat completion"
                " (no choices[0].message); is BEDS_AI_URL the API's base URL?",
                status=status,
            ) from None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise AiUnavailable(
                f"{self._where}: choices[0].message.content is not text", status=status
            )
        return content
