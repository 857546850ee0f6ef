"""MongoDB objects of a REC entity: its collection's ``$jsonSchema`` validator and its indexes.

The file format is beds-rec's (docs/rec.md, "Schema files"). The validator does not forbid other
properties, so the adapter's own ``_beds_key`` and ``_beds_updates`` pass; the generated ``id``
is the document's ``_id`` and never a property.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from beds.generator.shape import collection, index_name, queries

if TYPE_CHECKING:
    from beds.generator.model import Entity, Field, LongOperation

__all__ = ("collection_json", "index_names", "indexes", "long_operation_pipeline", "validator")

_BSON = {
    "str": ["string"],
    "int": ["int", "long"],
    "float": ["double", "int", "long"],
    "bool": ["bool"],
    "datetime": ["date"],
    "decimal": ["decimal"],
}


def _mongo(name: str) -> str:
    return "_id" if name == "id" else name


def _property(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if field.type != "json":
        kinds = list(_BSON[field.type])
        if field.nullable:
            kinds.append("null")
        out["bsonType"] = kinds[0] if len(kinds) == 1 else kinds
    if field.min_length is not None:
        out["minLength"] = field.min_length
    if field.max_length is not None:
        out["maxLength"] = field.max_length
    if field.pattern is not None:
        out["pattern"] = f"^(?:{field.pattern})$"
    if field.minimum is not None:
        out["minimum"] = int(field.minimum) if field.type == "int" else field.minimum
    if field.maximum is not None:
        out["maximum"] = int(field.maximum) if field.type == "int" else field.maximum
    return out


def validator(entity: Entity) -> dict[str, Any]:
    """The collection's ``$jsonSchema``: types and constraints of every stored field."""
    stored = [f for f in entity.fields if f.name != "id"]
    required = [f.name for f in stored if not f.nullable]
    return {
        "$jsonSchema": {
            "bsonType": "object",
            "required": required,
            "properties": {f.name: _property(f) for f in stored},
        }
    }


def indexes(entity: Entity) -> list[dict[str, Any]]:
    """Every index: the key (unique), unique fields, references, each query, retention."""
    out: list[dict[str, Any]] = []
    if entity.key != ("id",):
        keys = [[_mongo(k), 1] for k in entity.key]
        out.append({"name": index_name(entity, "key", "uq"), "keys": keys, "unique": True})
    for field in entity.fields:
        if field.unique:
            name = index_name(entity, field.name, "uq")
            out.append({"name": name, "keys": [[field.name, 1]], "unique": True})
    for field in entity.fields:
        if field.references and not field.unique:
            out.append({"name": index_name(entity, field.name), "keys": [[field.name, 1]]})
    for query in queries(entity)[1:]:
        fields: list[list[Any]] = []
        for name in [*query.by, *(w.field for w in query.where)]:
            if all(k[0] != _mongo(name) for k in fields):
                fields.append([_mongo(name), 1])
        for item in query.order_by:
            name = _mongo(item.lstrip("-"))
            if all(k[0] != name for k in fields):
                fields.append([name, -1 if item.startswith("-") else 1])
        if not fields or fields == [["_id", 1]]:
            continue  # _id is indexed already
        out.append({"name": index_name(entity, query.name), "keys": fields})
    if entity.capabilities.retention_days is not None:
        out.append({"name": index_name(entity, "created"), "keys": [["created_at", 1]]})
    return out


def index_names(entity: Entity) -> tuple[str, ...]:
    """The names the template lists in ``[rec] indexes`` (start-up checks they exist)."""
    return tuple(i["name"] for i in indexes(entity))


def collection_json(entity: Entity) -> bytes:
    """The schema file: collection, validator and indexes, as stable indented JSON."""
    data = {
        "collection": collection(entity),
        "validator": validator(entity),
        "indexes": indexes(entity),
    }
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def long_operation_pipeline(entity: Entity, operation: LongOperation) -> list[dict[str, Any]]:
    """Records per value of ``count_by``, in ``steps`` steps.

    Each step counts the values whose text length modulo ``steps`` is the step, so every value
    is counted by exactly one step, whole.
    """
    field = f"${operation.count_by}"
    text = {"$toString": {"$ifNull": [field, ""]}}
    share = {"$mod": [{"$strLenCP": text}, {"$param": "steps"}]}
    return [
        {"$match": {"$expr": {"$eq": [share, {"$param": "step"}]}}},
        {"$group": {"_id": field, "records": {"$sum": 1}}},
        {"$project": {"_id": 0, operation.count_by: "$_id", "records": 1}},
        {"$sort": {operation.count_by: 1}},
    ]
