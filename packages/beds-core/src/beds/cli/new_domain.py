"""``beds new-domain``: a template package generated from a domain description.

The first run writes the whole package. A later run on an edited description prints the diff of
every generated file, including the next numbered schema migration, and writes only with
``--write`` (or a "yes" at the terminal); ``--check`` exits 1 when the package is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from beds.cli.common import EXIT_CONFIG, EXIT_FAILED, fail

if TYPE_CHECKING:
    from beds.generator.model import Domain

__all__ = ("new_domain",)


def _installed() -> list[tuple[str, str, str]]:
    """``(template, tla, distribution)`` of every installed template."""
    from beds.plugins import Hooks, make_plugin_manager

    registry = Hooks(make_plugin_manager()).register_templates()
    return [(t.name, t.tla, t.distribution) for t in registry.templates.values()]


def _ask(domain: str) -> str:
    """A minimal description, from prompts at the terminal (one entity; edit the file after)."""
    from beds.generator.toml import dumps

    entity = click.prompt("First entity name")
    store = click.prompt("Store", type=click.Choice(["rel", "rec"]), default="rel")
    tla = click.prompt("TLA (three letters)")
    fields: dict[str, dict[str, object]] = {}
    while True:
        name = click.prompt("Field name (empty to finish)", default="", show_default=False)
        if not name:
            break
        kind = click.prompt(
            "  type",
            type=click.Choice(["str", "int", "float", "bool", "datetime", "decimal", "json"]),
            default="str",
        )
        spec: dict[str, object] = {"type": kind}
        if kind == "str":
            spec["max_length"] = click.prompt("  max_length", type=int, default=200)
        fields[name] = spec
    queries: dict[str, dict[str, object]] = {}
    for name in fields:
        if click.confirm(f"Query records by {name}?", default=False):
            queries[f"by_{name}"] = {"by": [name]}
    data = {
        "domain": {"name": domain},
        "entities": {entity: {"store": store, "tla": tla, "fields": fields, "queries": queries}},
    }
    return dumps(data)


def _describe(domain: Domain, out: Path, plan_added: int) -> str:
    return (
        f"{domain.distribution}: {len(domain.entities)} template(s), {plan_added} file(s) in {out}"
    )


@click.command("new-domain")
@click.argument("name")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The domain description (TOML).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The package directory (default: ./beds-NAME).",
)
@click.option(
    "--interactive", is_flag=True, help="Ask for the description at the terminal instead."
)
@click.option(
    "--write", "write_changes", is_flag=True, help="Write the changes to an existing package."
)
@click.option(
    "--check", is_flag=True, help="Write nothing; exit 1 when the package is out of date."
)
def new_domain(
    name: str,
    source: Path | None,
    out: Path | None,
    interactive: bool,
    write_changes: bool,
    check: bool,
) -> None:
    """Generate the template package NAME from a domain description, or update it."""
    from beds.errors import BedsError
    from beds.generator.description import (
        DescriptionError,
        check_installed,
        parse_description,
        read_description,
    )
    from beds.generator.diff import plan, write

    if (source is None) == (not interactive):
        fail("give --from FILE or --interactive (one of them)", EXIT_CONFIG)
    try:
        if source is not None:
            domain = read_description(str(source))
        else:
            text = _ask(name)
            domain = parse_description(text, source="<interactive>")
        if domain.name != name:
            raise DescriptionError(
                f"is {domain.name!r}, but the command names {name!r}",
                file=str(source or "<interactive>"),
                key="domain.name",
            )
        check_installed(domain, _installed())
        root = out if out is not None else Path(domain.distribution)
        result = plan(domain, root)
    except DescriptionError as exc:
        fail(str(exc), EXIT_CONFIG)
    except BedsError as exc:
        fail(str(exc), EXIT_FAILED)
    if result.up_to_date:
        click.echo(f"{domain.distribution}: up to date ({root})")
        return
    if check:
        click.echo(result.diff(), nl=False)
        fail(f"{root} is out of date: run `beds new-domain {name} --from ... --write`")
    if result.existing:
        click.echo(result.diff(), nl=False)
        for path in result.migrations:
            click.echo(f"migration: {path} (review it, then `beds schema migrate`)")
        if not write_changes:
            if not sys.stdin.isatty():
                fail("the package exists: review the diff above, then run again with --write")
            if not click.confirm("Write these changes?", default=False):
                fail("nothing written")
    try:
        write(result)
    except OSError as exc:
        fail(f"cannot write {root}: {exc.strerror or exc}")
    click.echo(_describe(domain, root, len(result.added) + len(result.changed)))
