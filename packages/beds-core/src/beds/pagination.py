"""Cursors: the opaque position of a page in a declared query's order (keyset pagination).

A fetch of a pageable query (one that declares ``order_by``, ending with the key) answers at
most ``limit`` records and, when more follow, ``meta.next``: a cursor the caller sends back as
``payload.cursor`` for the next page. The cursor holds the last record's values of the order's
fields, so the next page starts strictly after that record: records inserted meanwhile do not
shift the pages, and each record present before the first page appears exactly once.

A cursor is bound to its template, query and params, and signed (HMAC-SHA256 with
``reads.cursor_secret``, shared by the nodes of an environment): a cursor that was changed,
made up, or sent with another query or other params is refused (``BEDS-400``). It carries
values the caller already received, so it reveals nothing new; it is not encrypted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from beds.errors import MalformedRequest

if TYPE_CHECKING:
    from beds.namaste import Record
    from beds.templates.model import QuerySpec

__all__ = ("Cursors", "development_secret")

_VERSION: Final = 1
_MAC_BYTES: Final = 16
MAX_CURSOR_CHARS: Final = 2048
"""Longest cursor accepted (a cursor holds a few short values)."""


def development_secret(env: str) -> bytes:
    """The cursor secret of a development node without ``reads.cursor_secret``.

    Derived from the environment's name, so every node of it agrees; not a secret, which is
    why production refuses to run without a configured one.
    """
    return hashlib.sha256(f"beds development cursors of {env}".encode()).digest()


class Cursors:
    """Make and read the cursors of one environment."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def make(self, template: str, spec: QuerySpec, params: Mapping[str, Any], last: Record) -> str:
        """The cursor of the page after ``last`` (a record as answered: JSON-safe values)."""
        values = [last.get(key.field) for key in spec.order_by]
        return self.seal([template, spec.name, _json_safe(params)], values)

    def read(
        self, cursor: object, template: str, spec: QuerySpec, params: Mapping[str, Any]
    ) -> list[Any]:
        """The order values a cursor holds, as JSON values.

        Raises:
            MalformedRequest: not a cursor of this query and these params (BEDS-400).
        """
        scope = [template, spec.name, _json_safe(params)]
        return self.unseal(cursor, scope, len(spec.order_by))

    def seal(self, scope: list[Any], values: list[Any]) -> str:
        """A signed cursor holding ``values``, valid only for ``scope``.

        ``scope`` is JSON values that say what the position is in: a query and its params, a
        ticket's result.
        """
        body = _b64(orjson.dumps([_VERSION, self._scope(scope), values]))
        return f"{body}.{_b64(self._mac(body))}"

    def unseal(self, cursor: object, scope: list[Any], count: int) -> list[Any]:
        """The ``count`` values of a cursor made by :meth:`seal` for ``scope``.

        Raises:
            MalformedRequest: not such a cursor, or changed (BEDS-400).
        """
        if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR_CHARS:
            raise _refused("must be a cursor from meta.next")
        body, _, mac = cursor.partition(".")
        document: object = None
        try:
            good = hmac.compare_digest(_unb64(mac), self._mac(body))
            document = orjson.loads(_unb64(body)) if good else None
        except (ValueError, orjson.JSONDecodeError):
            good = False
        if not good:
            raise _refused("is not a cursor this environment made, or it was changed")
        if (
            not isinstance(document, list)
            or len(document) != 3
            or document[0] != _VERSION
            or not isinstance(document[2], list)
            or len(document[2]) != count
        ):
            raise _refused("is not a cursor this environment made, or it was changed")
        if document[1] != self._scope(scope):
            raise _refused("belongs to another query or other params: start again without it")
        values: list[Any] = document[2]
        return values

    def _mac(self, body: str) -> bytes:
        return hmac.digest(self._secret, body.encode("ascii"), "sha256")[:_MAC_BYTES]

    @staticmethod
    def _scope(scope: list[Any]) -> str:
        """A digest of what the cursor is valid for (canonical JSON)."""
        canonical = orjson.dumps(scope, option=orjson.OPT_SORT_KEYS)
        return _b64(hashlib.sha256(canonical).digest()[:12])


def _json_safe(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params as they were validated (datetimes, decimals) in a canonical JSON form."""
    safe: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, Sequence) and not isinstance(value, str):
            safe[name] = [str(item) for item in value]
        else:
            safe[name] = None if value is None else str(value)
    return safe


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode base64url, refusing any text but the one encoding of its bytes.

    The last character of a base64 text has bits the bytes do not use: without this check,
    a changed cursor could decode to the same bytes and pass.
    """
    if not text.isascii():
        raise ValueError("not base64")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical base64 of its bytes")
    return data


def _refused(problem: str) -> MalformedRequest:
    return MalformedRequest("bad cursor", details=(f"$.payload.cursor: {problem}",))
