"""An entity's template declaration (``templates/<template>.toml``), and its store objects' names.

Every generated template is parsed back with :func:`beds.templates.parse_template` by the
generator's tests, so what is written here is what the template validation accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from beds.generator.rec import index_names, long_operation_pipeline
from beds.generator.shape import (
    collection,
    create_params,
    create_returns,
    delete_params,
    procedure,
    queries,
    update_params,
    update_returns,
    view,
)
from beds.generator.toml import Inline, dumps

if TYPE_CHECKING:
    from beds.generator.model import Domain, Entity, Field, Query

__all__ = ("template_dict", "template_toml")


def _field(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"type": field.type}
    if not field.required:
        out["required"] = False
    if field.nullable:
        out["nullable"] = True
    if field.generated:
        out["generated"] = True
    for key in ("min_length", "max_length", "pattern"):
        value = getattr(field, key)
        if value is not None:
            out[key] = value
    for key in ("minimum", "maximum"):
        value = getattr(field, key)
        if value is not None:
            out[key] = int(value) if field.type == "int" else value
    if field.description:
        out["description"] = field.description
    return out


def _query(entity: Entity, query: Query) -> dict[str, Any]:
    out: dict[str, Any] = {"params": list(query.params)}
    if query.description:
        out["description"] = query.description
    if query.order_by:
        out["order_by"] = list(query.order_by)
    out["max_limit"] = query.page_size
    if query.principal:
        out["principal"] = query.principal
    if entity.store == "rel":
        out["view"] = view(entity)
    else:
        out["filter"] = list(query.by)
        out["projection"] = [f.name for f in entity.fields]
    if query.where:
        out["where"] = {w.param: Inline(field=w.field, op=w.op) for w in query.where}
    return out


def _long_operation(entity: Entity, name: str) -> dict[str, Any]:
    operation = next(o for o in entity.long_operations if o.name == name)
    out: dict[str, Any] = {
        "description": operation.description
        or f"Records per {operation.count_by}, counted in {operation.steps} step(s).",
        "steps": operation.steps,
    }
    if entity.store == "rel":
        out["procedure"] = procedure(entity, name)
    else:
        out["pipeline"] = [Inline(stage) for stage in long_operation_pipeline(entity, operation)]
    return out


def template_dict(domain: Domain, entity: Entity) -> dict[str, Any]:
    """The template declaration of ``entity`` as TOML data, in the order it is written."""
    caps = entity.capabilities
    out: dict[str, Any] = {
        "name": domain.template_name(entity),
        "store": entity.store,
        "tla": entity.tla,
    }
    if entity.description:
        out["description"] = entity.description
    out["key"] = list(entity.key)
    capabilities: dict[str, Any] = {}
    for flag in ("audit", "journal", "locking"):
        if getattr(caps, flag):
            capabilities[flag] = True
    if caps.locking and caps.version_field != "version":
        capabilities["version_field"] = caps.version_field
    if caps.cache:
        capabilities["cache"] = True
        if caps.cache_ttl is not None:
            capabilities["cache_ttl"] = caps.cache_ttl
    if caps.retention_days is not None:
        capabilities["retention_days"] = caps.retention_days
    if capabilities:
        out["capabilities"] = capabilities
    if caps.retention_days is not None:
        retention: dict[str, Any] = {"field": "created_at", "batch_size": 1000}
        if entity.store == "rel":
            retention["procedure"] = procedure(entity, "retire")
        out["retention"] = retention
    access: dict[str, Any] = {}
    for key in ("create", "update", "delete", "fetch", "submit"):
        rule = getattr(entity.access, key)
        if rule is not None:
            access[key] = list(rule)
    if entity.access.owner:
        access["owner"] = entity.access.owner
    if access:
        out["access"] = access
    if entity.store == "rec":
        out["rec"] = {"collection": collection(entity), "indexes": list(index_names(entity))}
    out["fields"] = {f.name: _field(f) for f in entity.fields}
    operations: dict[str, Any] = {}
    if "create" in entity.operations:
        operations["create"] = {
            "params": list(create_params(entity)),
            "returns": list(create_returns(entity)),
        }
    if "update" in entity.operations:
        operations["update"] = {
            "params": list(update_params(entity)),
            "returns": list(update_returns(entity)),
        }
    if "delete" in entity.operations:
        operations["delete"] = {"params": list(delete_params(entity))}
    if entity.store == "rel":
        for name, operation in operations.items():
            operation["procedure"] = procedure(entity, name)
    out["operations"] = operations
    out["queries"] = {q.name: _query(entity, q) for q in queries(entity)}
    if entity.long_operations:
        out["long_operations"] = {
            o.name: _long_operation(entity, o.name) for o in entity.long_operations
        }
    return out


def template_toml(domain: Domain, entity: Entity) -> str:
    """The template file's text."""
    head = (
        f"# Generated by `beds new-domain` from the {domain.name} description: edit the"
        " description and run it again\n"
        f"# rather than this file. Entity {entity.name!r} ({entity.store.upper()}); its store"
        " objects are in schema/.\n"
    )
    return head + dumps(template_dict(domain, entity))
