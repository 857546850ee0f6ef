"""What an entity becomes, by name: its store objects, its operations' params, its queries.

One place for the conventions every generator module shares (the template, the REL and REC
objects, the docs and the tests all read them here), so they cannot disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beds.generator.model import Query

if TYPE_CHECKING:
    from beds.generator.model import Entity, Field

__all__ = (
    "KEY_QUERY",
    "collection",
    "create_params",
    "create_returns",
    "delete_params",
    "index_name",
    "procedure",
    "queries",
    "table",
    "update_params",
    "update_returns",
    "view",
)

KEY_QUERY = "by_key"


def table(entity: Entity) -> str:
    """The REL table: ``<tla>_<entity>``."""
    return f"{entity.tla}_{entity.name}"


def view(entity: Entity) -> str:
    """The REL view every query reads: ``<tla>_<entity>_v``."""
    return f"{entity.tla}_{entity.name}_v"


def collection(entity: Entity) -> str:
    """The REC collection: ``<tla>_<entity>``."""
    return f"{entity.tla}_{entity.name}"


def procedure(entity: Entity, name: str) -> str:
    """A REL routine of the entity: ``<tla>_<name>`` (create, update, delete, retire, ...)."""
    return f"{entity.tla}_{name}"


def index_name(entity: Entity, name: str, suffix: str = "ix") -> str:
    """An index: ``<tla>_<name>_<suffix>``."""
    return f"{entity.tla}_{name}_{suffix}"


def _writable(entity: Entity) -> list[Field]:
    return [f for f in entity.fields if not f.generated]


def create_params(entity: Entity) -> tuple[str, ...]:
    """Every field a create sets: the ones the store does not generate, in declared order."""
    return tuple(f.name for f in _writable(entity))


def create_returns(entity: Entity) -> tuple[str, ...]:
    """What a create answers: the key and the generated fields set on create."""
    out = list(entity.key)
    out += [f.name for f in entity.fields if f.generated and f.name != "updated_at"]
    return tuple(dict.fromkeys(out))


def _version(entity: Entity) -> tuple[str, ...]:
    caps = entity.capabilities
    return (caps.version_field,) if caps.locking else ()


def update_params(entity: Entity) -> tuple[str, ...]:
    """The key, the version (locking), then every other writable field but the owner."""
    rest = [
        f.name
        for f in _writable(entity)
        if f.name not in entity.key and f.name != entity.access.owner
    ]
    return (*entity.key, *_version(entity), *rest)


def update_returns(entity: Entity) -> tuple[str, ...]:
    """What an update answers: the key, the new version, REL's ``updated_at``."""
    extra = ("updated_at",) if entity.store == "rel" else ()
    return tuple(dict.fromkeys((*entity.key, *_version(entity), *extra)))


def delete_params(entity: Entity) -> tuple[str, ...]:
    """The key and, with locking, the version."""
    return (*entity.key, *_version(entity))


def queries(entity: Entity) -> tuple[Query, ...]:
    """The entity's queries, the generated key query first."""
    key_query = Query(
        name=KEY_QUERY,
        by=entity.key,
        page_size=1,
        description="One record by its key (BEDS reads records through it too).",
    )
    return (key_query, *entity.queries)
