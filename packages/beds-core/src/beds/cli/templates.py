"""``beds templates``: the installed templates, with their store and distribution.

With ``--json``, each template's capabilities, operations and queries too (conditions, order,
whether it pages) and its retention, so tools and other languages can read what a domain offers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from beds.cli.common import (
    config_option,
    echo_json,
    exit_code_of,
    fail,
    json_option,
    load,
    quiet_logging,
)

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from beds.templates.model import LongOperation, QuerySpec, Template

__all__ = ("templates",)


@click.command()
@config_option
@json_option
def templates(config_path: Path | None, as_json: bool) -> None:
    """List installed templates with their store and distribution."""
    from beds.config.stores import connection_name
    from beds.node import BedsNode, StartupError

    node = BedsNode(load(config_path))
    quiet_logging("ERROR")
    try:
        node.load_plugins()
    except StartupError as exc:
        fail(str(exc), exit_code_of(exc.checks))
    assert node.registry is not None
    rows = [describe(t) for t in sorted(node.registry.templates.values(), key=lambda t: t.name)]
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'TEMPLATE':<24} {'STORE':<6} {'TLA':<4} DISTRIBUTION")
    for row in rows:
        # A template on a named database shows its connection (rel.warehouse) as its store.
        store = connection_name(row["store"], row["database"])
        click.echo(f"{row['name']:<24} {store:<6} {row['tla']:<4} {row['distribution']}")


def describe(template: Template) -> dict[str, Any]:
    """What ``--json`` says of one template."""
    from beds.templates.validate import history_query

    caps = template.capabilities
    queries = {name: _query(spec) for name, spec in template.queries.items() if not spec.internal}
    history = history_query(template)
    if history is not None:
        queries[history.name] = _query(history)
    return {
        "name": template.name,
        "store": template.store,
        "database": template.database,
        "tla": template.tla,
        "distribution": template.distribution,
        "source": template.source,
        "key": list(template.key),
        "capabilities": {
            "audit": caps.audit,
            "journal": caps.journal,
            "locking": caps.locking,
            **({"version_field": caps.version_field} if caps.locking else {}),
            "cache": caps.cache,
            **({"cache_ttl": caps.cache_ttl, "cache_size": caps.cache_size} if caps.cache else {}),
            "consistency": caps.consistency.value,
            "live": caps.live,
        },
        "operations": {
            op.value: {"params": list(spec.params), "returns": list(spec.returns)}
            for op, spec in template.operations.items()
        },
        "queries": queries,
        "default_query": template.default_query,
        "long_operations": {
            name: _long_operation(operation) for name, operation in template.long_operations.items()
        },
        "retention": _retention(template),
    }


def _retention(template: Template) -> dict[str, Any] | None:
    """How old records are retired (``None``: kept for ever), with the store's keys."""
    retention = template.retention
    if retention is None:
        return None
    return {
        "days": retention.days,
        "field": retention.field,
        "batch_size": retention.batch_size,
        **retention.binding,
    }


def _long_operation(operation: LongOperation) -> dict[str, Any]:
    return {
        "description": operation.description,
        "steps": operation.steps,
        "step_timeout": operation.step_timeout,
        "params": {
            name: {
                "type": param.field.type.value,
                "required": param.field.required and param.default is None,
                "default": param.default,
                **({"description": param.field.description} if param.field.description else {}),
            }
            for name, param in operation.params.items()
        },
    }


def _query(spec: QuerySpec) -> dict[str, Any]:
    return {
        "params": list(spec.params),
        "where": {param: {"field": f.field, "op": f.op.value} for param, f in spec.where.items()},
        "order_by": [("-" if key.descending else "") + key.field for key in spec.order_by],
        "pageable": spec.pageable,
        "max_limit": spec.max_limit,
    }
