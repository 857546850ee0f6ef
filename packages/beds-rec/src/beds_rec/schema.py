"""Install the DBA's REC schema files: collections, their validators and named indexes.

Each file ``schema/rec/*.json`` of a template package declares one collection::

    {
      "collection": "spf_profiles",
      "validator": {"$jsonSchema": {"bsonType": "object", "...": "..."}},
      "indexes": [{"name": "spf_handle_uq", "keys": [["handle", 1]], "unique": true}]
    }

An index may also set ``expire_after_seconds`` (a TTL index: MongoDB deletes a document that
many seconds after the date in its first key).

Applying is idempotent: a missing collection is created with its validator, an existing one gets
the validator through ``collMod``, and each index is created by name (an index whose definition
changed is dropped and created again). This is a development convenience; in production the DBA
installs the schema and the node only verifies it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from pymongo.errors import CollectionInvalid, OperationFailure

from beds.errors import TemplateError

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

    from beds.namaste import SchemaFile

__all__ = ("CollectionSchema", "IndexSchema", "apply_collection", "parse_schema_file")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_FILE_KEYS = ("collection", "validator", "indexes")
_INDEX_KEYS = ("name", "keys", "unique", "sparse", "expire_after_seconds")
# IndexOptionsConflict, IndexKeySpecsConflict: an index of that name exists with another definition.
_INDEX_CHANGED = frozenset({85, 86})


@attrs.frozen(kw_only=True)
class IndexSchema:
    """One named index."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    sparse: bool = False
    expire_after_seconds: int | None = None

    def options(self) -> dict[str, Any]:
        """The keyword arguments ``create_index`` takes for this index."""
        options: dict[str, Any] = {"name": self.name, "unique": self.unique, "sparse": self.sparse}
        if self.expire_after_seconds is not None:
            options["expireAfterSeconds"] = self.expire_after_seconds
        return options


@attrs.frozen(kw_only=True)
class CollectionSchema:
    """One collection, its validator and its indexes, as a schema file declares them."""

    collection: str
    validator: Mapping[str, Any] | None
    indexes: tuple[IndexSchema, ...]


def parse_schema_file(file: SchemaFile) -> CollectionSchema:
    """Parse and check one REC schema file.

    Raises:
        TemplateError: the file is not valid JSON or does not have the shape above; the error
            names the file and the key.
    """

    def fail(message: str) -> TemplateError:
        return TemplateError(message, template=file.name)

    try:
        data = json.loads(file.text)
    except ValueError as exc:
        raise fail(f"is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise fail("must be a JSON object")
    unknown = sorted(set(data) - set(_FILE_KEYS))
    if unknown:
        raise fail(f"{unknown[0]} is not a schema key (expected {', '.join(_FILE_KEYS)})")
    collection = data.get("collection")
    if not isinstance(collection, str) or not _NAME.match(collection):
        raise fail("collection must be an identifier (letters, digits, _; at most 64)")
    validator = data.get("validator")
    if validator is not None and not isinstance(validator, dict):
        raise fail("validator must be a JSON object")
    raw_indexes = data.get("indexes", [])
    if not isinstance(raw_indexes, list):
        raise fail("indexes must be a list")
    indexes = tuple(_parse_index(raw, f"indexes[{i}]", fail) for i, raw in enumerate(raw_indexes))
    if len({index.name for index in indexes}) != len(indexes):
        raise fail("indexes declares an index name twice")
    return CollectionSchema(collection=collection, validator=validator, indexes=indexes)


def _parse_index(raw: Any, path: str, fail: Callable[[str], TemplateError]) -> IndexSchema:
    if not isinstance(raw, dict):
        raise fail(f"{path} must be a JSON object")
    unknown = sorted(set(raw) - set(_INDEX_KEYS))
    if unknown:
        raise fail(f"{path}.{unknown[0]} is not an index key (expected {', '.join(_INDEX_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail(f"{path}.name must be an identifier")
    keys = raw.get("keys")
    if not isinstance(keys, list) or not keys:
        raise fail(f"{path}.keys must be a non-empty list of [field, 1 | -1]")
    pairs: list[tuple[str, int]] = []
    for key in keys:
        if not (
            isinstance(key, list)
            and len(key) == 2
            and isinstance(key[0], str)
            and key[0]
            and not isinstance(key[1], bool)
            and key[1] in (1, -1)
        ):
            raise fail(f"{path}.keys must be a non-empty list of [field, 1 | -1]")
        pairs.append((key[0], key[1]))
    unique, sparse = raw.get("unique", False), raw.get("sparse", False)
    for flag, value in (("unique", unique), ("sparse", sparse)):
        if not isinstance(value, bool):
            raise fail(f"{path}.{flag} must be true or false")
    expire = raw.get("expire_after_seconds")
    if expire is not None and (
        isinstance(expire, bool) or not isinstance(expire, int) or expire < 0
    ):
        raise fail(f"{path}.expire_after_seconds must be a whole number of seconds, 0 or more")
    return IndexSchema(
        name=name, keys=tuple(pairs), unique=unique, sparse=sparse, expire_after_seconds=expire
    )


async def apply_collection(
    database: AsyncDatabase[dict[str, Any]], schema: CollectionSchema
) -> None:
    """Create or update one collection and its indexes (idempotent).

    Driver exceptions propagate; the adapter translates them.
    """
    name = schema.collection
    validator = None if schema.validator is None else dict(schema.validator)
    exists = bool(await database.list_collection_names(filter={"name": name}))
    if not exists:
        try:
            if validator is None:
                await database.create_collection(name)
            else:
                await database.create_collection(name, validator=validator)
        except CollectionInvalid:
            exists = True  # another node created it meanwhile: update it below
    if exists and validator is not None:
        await database.command("collMod", name, validator=validator)
    collection = database[name]
    for index in schema.indexes:
        keys = list(index.keys)
        try:
            await collection.create_index(keys, **index.options())
        except OperationFailure as exc:
            if exc.code not in _INDEX_CHANGED:
                raise
            await collection.drop_index(index.name)
            await collection.create_index(keys, **index.options())
