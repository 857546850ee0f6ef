"""REC long operations (CALGON): a declared aggregation pipeline, or the retention sweep, by step.

A long operation's REC keys (docs/rec.md, "Tickets and long operations")::

    [long_operations.census]
    steps = 4
    collection = "spf_profiles"   # optional: the template's [rec] collection
    pipeline = [
      {"$match" = {country = {"$param" = "country"}}},
      {"$match" = {"$expr" = {"$eq" = [{"$mod" = ["$rank", {"$param" = "steps"}]},
                                       {"$param" = "step"}]}}},
      {"$group" = {_id = "$country", profiles = {"$sum" = 1}}},
      {"$project" = {_id = 0, country = "$_id", profiles = 1}},
    ]

A value ``{"$param" = "name"}`` anywhere in the pipeline stands for a param (or ``step``,
``steps``): the whole table is replaced by the value, as BSON, when the step runs; the pipeline
is never built from text, so a value cannot change its shape. Checked when the template is
prepared, each error naming its key path (``long_operations.census.pipeline[1].$match.country``):

* every stage is a one-key table naming a known aggregation stage (no server-side JavaScript:
  ``$where``, ``$function`` and ``$accumulator`` are refused anywhere);
* every collection the pipeline names (``collection``, ``$lookup``/``$graphLookup`` ``from``,
  ``$unionWith``, ``$out``, ``$merge``) carries the template's TLA prefix and lies in the node's
  database: the DBA owns the template's objects, and the node's account is granted exactly
  those (:mod:`beds_rec.provision`), so a pipeline cannot write into another domain's
  collections or another database;
* every ``$param`` names a declared param, ``step`` or ``steps``;
* a text or JSON param inside an aggregation expression (``$expr``, ``$project``, ``$group``,
  ``$set``…) is wrapped in ``$literal``: there, a text that starts with ``$`` would read a field
  instead of being compared as a value.

A step's result documents become records as fetch returns them: ``_id`` only as ``id`` (its 24
hexadecimal characters) when the template declares a generated ``id`` and ``_id`` is an
``ObjectId``; otherwise ``_id`` is left out (name a group key with ``$project`` or ``$set``).

**Retention.** A template with ``retention_days`` gets a ``retention`` operation from the core
(``steps = 0``, params ``before`` and ``limit``) whose binding is not a pipeline::

    {"retention": {"field": "created_at"}, "cool_collection": "spn_notes_cool"}  # cool: optional

Each step retires at most ``limit`` documents whose ``field`` is before ``before``, oldest first:
it copies them into the cool collection (a replace by ``_id``, upserting), when one is declared,
then deletes them from the template's collection by ``_id``, and answers ``[{"retired": n}]``,
or ``[]`` once none is left (which ends the ticket). A standalone MongoDB server has no
multi-document transactions; that order makes a step run again after its node died idempotent: a
document copied but not deleted is copied again under the same ``_id``, one deleted is not found.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
from bson.objectid import ObjectId
from loguru import logger
from pymongo import ReplaceOne

from beds.errors import TemplateError, ValidationFailed
from beds.templates.model import FieldType, LongOperation, Template
from beds.templates.retention import RETENTION, declared_at
from beds_rec.errors import database_call, map_exceptions
from beds_rec.values import DOC_ID, ID_FIELD, to_bson, to_record

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection
    from pymongo.asynchronous.database import AsyncDatabase

    from beds.namaste import CallContext, Record
    from beds_rec.bindings import TemplatePlan

__all__ = (
    "PARAM",
    "LongOperations",
    "OperationPlan",
    "PipelinePlan",
    "RetentionPlan",
    "plan_long_operations",
)

PARAM: Final = "$param"
"""The key of a placeholder table: ``{"$param" = "name"}``."""
_KEYS: Final = ("pipeline", "collection")
_RETENTION_KEYS: Final = (RETENTION, "cool_collection")
_RETENTION_PARAMS: Final = {"before": FieldType.DATETIME, "limit": FieldType.INT}
_STAGES: Final = frozenset(
    {
        "$addFields",
        "$bucket",
        "$bucketAuto",
        "$count",
        "$densify",
        "$facet",
        "$fill",
        "$geoNear",
        "$graphLookup",
        "$group",
        "$limit",
        "$lookup",
        "$match",
        "$merge",
        "$out",
        "$project",
        "$redact",
        "$replaceRoot",
        "$replaceWith",
        "$sample",
        "$set",
        "$setWindowFields",
        "$skip",
        "$sort",
        "$sortByCount",
        "$unionWith",
        "$unset",
        "$unwind",
    }
)
"""The stages a long operation may use: the data stages, not the diagnostic or administrative
ones (``$collStats``, ``$currentOp``, ``$indexStats``…), which need privileges beyond the
template's collections."""
_EXPRESSION_STAGES: Final = frozenset(
    {
        "$addFields",
        "$bucket",
        "$bucketAuto",
        "$fill",
        "$group",
        "$project",
        "$redact",
        "$replaceRoot",
        "$replaceWith",
        "$set",
        "$setWindowFields",
        "$sortByCount",
    }
)
"""Stages whose argument is made of aggregation expressions."""
_JAVASCRIPT: Final = frozenset({"$where", "$function", "$accumulator"})
_WRITES: Final = {"$out": ("insert", "remove"), "$merge": ("insert", "update")}
"""The stages that write, and the actions they need on their target collection."""
_LITERAL_TYPES: Final = frozenset({FieldType.STR, FieldType.JSON})
"""Param types whose values an expression could read as field paths or operators."""
_VALUE, _EXPRESSION, _LITERAL = "value", "expression", "literal"

Document = dict[str, Any]


@attrs.frozen(kw_only=True)
class PipelinePlan:
    """One long operation's pipeline, checked against its template."""

    operation: str
    collection: str
    """The collection the pipeline runs on."""
    pipeline: tuple[Mapping[str, Any], ...]
    """The declared stages, placeholders in place."""
    reads: tuple[str, ...] = ()
    """The other collections it reads (``$lookup``, ``$graphLookup``, ``$unionWith``)."""
    writes: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    """The collection its ``$out`` or ``$merge`` writes to, and the actions that takes."""

    def stages(self, values: Mapping[str, Any]) -> list[Document]:
        """The pipeline to run: each placeholder replaced by its value (already BSON)."""
        return [_bind(stage, values) for stage in self.pipeline]

    @property
    def needed(self) -> tuple[str, ...]:
        """The collections that must exist (``verify``): the ones it reads."""
        return (self.collection, *self.reads)


@attrs.frozen(kw_only=True)
class RetentionPlan:
    """The retention sweep of a template with ``retention_days``, checked against it."""

    operation: str
    collection: str
    """The template's collection, whose old documents are retired."""
    field: str
    """The document field that holds a record's age (a declared ``datetime`` field)."""
    cool_collection: str | None = None
    """Where retired documents are kept; ``None``: they are deleted."""

    @property
    def reads(self) -> tuple[str, ...]:
        """Collections read beside ``collection``: none."""
        return ()

    @property
    def writes(self) -> Mapping[str, tuple[str, ...]]:
        """The actions a step takes beside reading ``collection`` (granted by provisioning)."""
        writes: dict[str, tuple[str, ...]] = {self.collection: ("remove",)}
        if self.cool_collection is not None:
            writes[self.cool_collection] = ("insert", "update")
        return writes

    @property
    def needed(self) -> tuple[str, ...]:
        """The collections that must exist (``verify``): the cool one is the DBA's too."""
        cool = () if self.cool_collection is None else (self.cool_collection,)
        return (self.collection, *cool)


OperationPlan = PipelinePlan | RetentionPlan
"""How the adapter runs one long operation."""


class _Adapter(Protocol):
    """What the mixin uses of the adapter."""

    @property
    def _database(self) -> AsyncDatabase[Document]: ...

    def _plan(self, template: Template) -> TemplatePlan: ...


class LongOperations:
    """The adapter's :class:`beds.calgon.tickets.LongOperationRunner` (a mixin of RecAdapter)."""

    def _prepare_long_operations(self: _Adapter, template: Template) -> None:
        """Check the template's long operations (``RecAdapter.prepare``).

        Raises:
            TemplateError: a declaration this module refuses; the message names its key path.
        """
        plan_long_operations(template, self._plan(template).collection)

    async def run_step(
        self: _Adapter,
        template: Template,
        operation: LongOperation,
        params: Mapping[str, Any],
        step: int,
        ctx: CallContext,
    ) -> list[Record]:
        """Run the operation's pipeline for ``step`` with ``params``; return its records.

        The server stops the aggregation after ``step_timeout`` too (``maxTimeMS``), so a step
        the worker gave up on does not keep running there. A retention sweep's step retires
        one batch instead (:func:`_retire`).

        Raises:
            ValidationFailed: a JSON param holds an object key MongoDB cannot take.
            RequestError: the server refused or failed the pipeline (:mod:`beds_rec.errors`).
        """
        plan = self._plan(template)
        planned = plan_long_operations(template, plan.collection)[operation.name]
        values = {
            name: to_bson(value, path=f"$.payload.params.{name}", template=template.name)
            for name, value in params.items()
        }
        values |= {"step": step, "steps": operation.steps}
        deadline = time.time() + operation.step_timeout
        if ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        if isinstance(planned, RetentionPlan):
            return await _retire(self, planned, values, deadline)
        with database_call(collection=planned.collection, deadline=deadline):
            cursor = await self._database[planned.collection].aggregate(planned.stages(values))
            documents = await cursor.to_list()
        return [_record(document, id_mapped=plan.id_mapped) for document in documents]

    async def _missing_long_operation_objects(self: _Adapter, template: Template) -> list[str]:
        """The collections the template's long operations need that do not exist (``verify``).

        Collections pipelines write are created by their ``$out`` or ``$merge``; a retention
        sweep's cool collection is the DBA's (a schema file of the template's package). A sweep
        without an index on its age field is logged: each batch then scans the collection.
        """
        plans = plan_long_operations(template, self._plan(template).collection).values()
        wanted = sorted({name for plan in plans for name in plan.needed})
        if not wanted:
            return []
        with map_exceptions(collection=wanted[0]):
            found = set(
                await self._database.list_collection_names(filter={"name": {"$in": wanted}})
            )
            for plan in plans:
                if isinstance(plan, RetentionPlan) and plan.collection in found:
                    hot = self._database[plan.collection]
                    if await _age_index(hot, plan.field) is None:
                        logger.warning(
                            "template {}: collection {} has no index on {}, so each retention "
                            "batch scans it; add one (the template's schema file)",
                            template.name,
                            plan.collection,
                            plan.field,
                        )
        return [name for name in wanted if name not in found]


def plan_long_operations(template: Template, collection: str) -> dict[str, OperationPlan]:
    """Check every long operation's REC keys; ``collection`` is the template's own.

    Raises:
        TemplateError: a missing or malformed pipeline, an unknown stage or key, a collection
            without the TLA prefix, an unknown ``$param``, an unwrapped text param in an
            expression, a retention binding that is not one; the message names the key path.
    """
    return {
        name: _plan_retention(template, operation, collection)
        if RETENTION in operation.binding
        else _Planner(template, operation).plan(collection)
        for name, operation in template.long_operations.items()
    }


def _plan_retention(template: Template, operation: LongOperation, collection: str) -> RetentionPlan:
    """Check a retention sweep's binding (docs/rec.md, "Retention").

    Its keys come from the template's ``[retention]`` table, so errors name them there
    (``retention.cool_collection``); a declared operation with a ``retention`` key is named
    by its own path.
    """
    name = operation.name
    path = declared_at(operation)

    def fail(message: str) -> TemplateError:
        return TemplateError(message, template=template.name)

    binding = operation.binding
    unknown = sorted(set(binding) - set(_RETENTION_KEYS))
    if unknown:
        raise fail(f"{path}.{unknown[0]} is not a REC retention key (expected cool_collection)")
    table = binding[RETENTION]
    if not isinstance(table, Mapping) or set(table) != {"field"}:
        raise fail(f"{path}: the retention binding must be {{field = NAME}}, got {table!r}")
    field = table["field"]
    spec = template.fields.get(field) if isinstance(field, str) else None
    if spec is None or spec.type is not FieldType.DATETIME:
        dates = sorted(n for n, f in template.fields.items() if f.type is FieldType.DATETIME)
        raise fail(
            f"{path}.field names {field!r}, which is not a datetime field of the template "
            f"(datetime fields: {', '.join(dates) or 'none'})"
        )
    params = {param: declared.field.type for param, declared in operation.params.items()}
    if params != _RETENTION_PARAMS:
        raise fail(f"long_operations.{name}: a retention sweep takes params before and limit")
    cool = None
    if "cool_collection" in binding:
        cool = template.object_name(binding["cool_collection"], key=f"{path}.cool_collection")
        if cool == collection:
            raise fail(
                f"{path}.cool_collection {cool!r} is the template's own collection: name "
                "another, or leave it out to delete retired records"
            )
    return RetentionPlan(operation=name, collection=collection, field=field, cool_collection=cool)


@attrs.define
class _Planner:
    """Walks one operation's pipeline, checking it and noting the collections it names."""

    template: Template
    operation: LongOperation
    reads: list[str] = attrs.field(factory=list)
    writes: dict[str, tuple[str, ...]] = attrs.field(factory=dict)

    @property
    def path(self) -> str:
        return f"long_operations.{self.operation.name}"

    def fail(self, message: str) -> TemplateError:
        return TemplateError(message, template=self.template.name)

    def plan(self, default: str) -> PipelinePlan:
        binding = self.operation.binding
        unknown = sorted(set(binding) - set(_KEYS))
        if unknown:
            raise self.fail(
                f"{self.path}.{unknown[0]} is not a REC key of a long operation "
                f"(expected {', '.join(_KEYS)})"
            )
        collection = default
        if "collection" in binding:
            key = f"{self.path}.collection"
            collection = self.template.object_name(binding["collection"], key=key)
        pipeline = binding.get("pipeline")
        path = f"{self.path}.pipeline"
        if not isinstance(pipeline, list) or not pipeline:
            raise self.fail(f"{path} must be a non-empty array of aggregation stages")
        self.stages(pipeline, path, top=True)
        return PipelinePlan(
            operation=self.operation.name,
            collection=collection,
            pipeline=tuple(pipeline),
            reads=tuple(dict.fromkeys(self.reads)),
            writes=self.writes,
        )

    def stages(self, pipeline: Any, path: str, *, top: bool = False) -> None:
        """Check a pipeline (the operation's, or one nested in a stage)."""
        if not isinstance(pipeline, list):
            raise self.fail(f"{path} must be an array of aggregation stages")
        for index, stage in enumerate(pipeline):
            where = f"{path}[{index}]"
            if not isinstance(stage, Mapping) or len(stage) != 1:
                raise self.fail(f"{where} must be a table with one key, the stage's name")
            ((name, argument),) = stage.items()
            if name not in _STAGES:
                raise self.fail(
                    f"{where}.{name} is not an aggregation stage a long operation may use "
                    f"(known: {', '.join(sorted(_STAGES))})"
                )
            if name in _WRITES and not (top and index == len(pipeline) - 1):
                raise self.fail(f"{where}.{name} must be the last stage of {self.path}.pipeline")
            self.stage(name, argument, f"{where}.{name}")

    def stage(self, name: str, argument: Any, path: str) -> None:
        """Check one stage's argument, by what the stage reads in it."""
        if name in _EXPRESSION_STAGES:
            self.walk(argument, path, _EXPRESSION)
        elif name in ("$lookup", "$graphLookup"):
            self.lookup(name, argument, path)
        elif name == "$unionWith":
            if not isinstance(argument, Mapping):
                self.read(argument, path)
                return
            self.read(argument.get("coll"), f"{path}.coll")
            for key, value in argument.items():
                if key == "pipeline":
                    self.stages(value, f"{path}.pipeline")
                elif key != "coll":
                    self.walk(value, f"{path}.{key}", _VALUE)
        elif name == "$facet":
            if not isinstance(argument, Mapping):
                raise self.fail(f"{path} must be a table of pipelines")
            for facet, pipeline in argument.items():
                self.stages(pipeline, f"{path}.{facet}")
        elif name in _WRITES:
            self.target(name, argument, path)
        else:
            self.walk(argument, path, _VALUE)

    def lookup(self, name: str, argument: Any, path: str) -> None:
        if not isinstance(argument, Mapping):
            raise self.fail(f"{path} must be a table")
        self.read(argument.get("from"), f"{path}.from")
        for key, value in argument.items():
            if key == "pipeline":
                self.stages(value, f"{path}.pipeline")
            elif key != "from":
                context = _EXPRESSION if key in ("let", "startWith") else _VALUE
                self.walk(value, f"{path}.{key}", context)

    def target(self, name: str, argument: Any, path: str) -> None:
        """``$out`` / ``$merge``: into a TLA-prefixed collection of the node's database."""
        if not isinstance(argument, Mapping):
            self.written(name, argument, path, None)
            return
        into, where = (
            (argument.get("coll"), f"{path}.coll")
            if name == "$out"
            else (argument.get("into"), f"{path}.into")
        )
        if name == "$out":
            self.written(name, into, where, argument)
        elif isinstance(into, Mapping):
            self.written(name, into.get("coll"), f"{where}.coll", into)
        else:
            self.written(name, into, where, None)
        for key, value in argument.items():
            if key in ("into", "coll", "db"):
                continue
            if key == "whenMatched" and isinstance(value, list):
                self.stages(value, f"{path}.whenMatched")
            else:
                self.walk(value, f"{path}.{key}", _EXPRESSION if key == "let" else _VALUE)

    def written(self, stage: str, name: Any, path: str, table: Mapping[str, Any] | None) -> None:
        """Note the collection a writing stage writes to; ``table`` may name a database."""
        if table is not None and "db" in table:
            raise self.fail(
                f"{path.rpartition('.')[0]}.db names a database: a long operation writes only "
                "into its template's collections, in the node's database"
            )
        collection = self.template.object_name(name, key=path)
        self.writes[collection] = _WRITES[stage]

    def read(self, name: Any, path: str) -> None:
        """Note a collection the pipeline reads: an identifier with the template's TLA prefix."""
        self.reads.append(self.template.object_name(name, key=path))

    def walk(self, node: Any, path: str, context: str) -> None:
        """Check placeholders and refused operators in a stage's argument."""
        if isinstance(node, list):
            for index, item in enumerate(node):
                self.walk(item, f"{path}[{index}]", context)
            return
        if not isinstance(node, Mapping):
            return
        if PARAM in node:
            self.placeholder(node, path, context)
            return
        for key, value in node.items():
            where = f"{path}.{key}"
            if key in _JAVASCRIPT:
                raise self.fail(f"{where} runs JavaScript on the server, which BEDS does not run")
            if key == "$literal":
                self.walk(value, where, _LITERAL)
            elif key == "$expr":
                self.walk(value, where, _EXPRESSION)
            else:
                self.walk(value, where, context)

    def placeholder(self, node: Mapping[str, Any], path: str, context: str) -> None:
        name = node[PARAM]
        if len(node) != 1 or not isinstance(name, str):
            raise self.fail(f'{path} must be {{"{PARAM}" = NAME}} alone, NAME a param\'s name')
        known = ["step", "steps", *self.operation.params]
        if name not in known:
            raise self.fail(
                f"{path}.{PARAM} names {name!r}, which is not a param of {self.operation.name} "
                f"(params: {', '.join(sorted(known))})"
            )
        param = self.operation.params.get(name)
        if context == _EXPRESSION and param is not None and param.field.type in _LITERAL_TYPES:
            raise self.fail(
                f"{path} puts {param.field.type.value} param {name!r} in an aggregation "
                f'expression: write {{"$literal" = {{"{PARAM}" = "{name}"}}}}, else a value '
                "starting with '$' would be read as a field path"
            )


async def _retire(
    adapter: _Adapter,
    plan: RetentionPlan,
    values: Mapping[str, Any],
    deadline: float,
) -> list[Record]:
    """One batch of the retention sweep: copy (when cool), then delete, by ``_id``.

    The delete also requires the age field to be still old: a record touched meanwhile (a
    ``last_seen`` field moved on) stays, and its copy is replaced when it is retired later.

    Raises:
        ValidationFailed: ``limit`` is below 1 (MongoDB reads a limit of 0 as none).
        RequestError: the server refused or failed a command (:mod:`beds_rec.errors`).
    """
    limit = values["limit"]
    if limit < 1:
        raise ValidationFailed(
            "a retention batch retires at least one record",
            details=("$.payload.params.limit: must be at least 1",),
        )
    older = {plan.field: {"$lt": values["before"]}}
    database = adapter._database
    hot = database[plan.collection]
    with database_call(collection=plan.collection, deadline=deadline):
        hint = await _age_index(hot, plan.field)
        projection = None if plan.cool_collection else {DOC_ID: 1}
        cursor = hot.find(older, projection, sort=[(plan.field, 1)], limit=limit, hint=hint)
        documents = await cursor.to_list()
    if not documents:
        return []
    if plan.cool_collection is not None:
        copies = [ReplaceOne({DOC_ID: doc[DOC_ID]}, doc, upsert=True) for doc in documents]
        with database_call(collection=plan.cool_collection, deadline=deadline):
            await database[plan.cool_collection].bulk_write(copies, ordered=False)
    ids = [document[DOC_ID] for document in documents]
    with database_call(collection=plan.collection, deadline=deadline):
        deleted = await hot.delete_many({DOC_ID: {"$in": ids}, **older})
    return [{"retired": deleted.deleted_count}]


async def _age_index(collection: AsyncCollection[Document], field: str) -> str | None:
    """The name of an index that serves ``field < before`` oldest first, if there is one.

    The shortest ascending or descending index whose first key is ``field``, without a partial
    filter (which could leave old documents out); ``None``: the server scans and sorts.
    """
    best: tuple[int, str] | None = None
    async for index in await collection.list_indexes():
        keys = list(index["key"].items())
        usable = keys[0][0] == field and keys[0][1] in (1, -1)
        if usable and "partialFilterExpression" not in index:
            candidate = (len(keys), str(index["name"]))
            best = candidate if best is None else min(best, candidate)
    return None if best is None else best[1]


def _bind(node: Any, values: Mapping[str, Any]) -> Any:
    """``node`` with every placeholder table replaced by its value (checked at prepare)."""
    if isinstance(node, Mapping):
        if PARAM in node:
            return values[node[PARAM]]
        return {key: _bind(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_bind(item, values) for item in node]
    return node


def _record(document: Mapping[str, Any], *, id_mapped: bool) -> Record:
    """A result document as a wire record, by the ``_id`` rule (:mod:`beds_rec.values`)."""
    names = [name for name in document if name != DOC_ID]
    own_id = id_mapped and ID_FIELD not in document and isinstance(document.get(DOC_ID), ObjectId)
    if own_id:
        names.insert(0, ID_FIELD)
    return to_record(document, names, id_mapped=own_id)
