"""``beds contract asyncapi``: the AsyncAPI 3.0 document of the AMQP contract.

Generated from the installed template packages (``[plugins] disabled`` honoured) and the
configuration (the server from ``amqp.url``, without its credentials). AsyncAPI tools turn it
into clients in other languages (docs/wire-contract.md, "AsyncAPI").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import orjson

from beds.cli.common import EXIT_FAILED, config_option, exit_code_of, fail, load, quiet_logging

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("contract",)


@click.group()
def contract() -> None:
    """Machine-readable documents of the contracts BEDS serves."""


@contract.command()
@config_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=str),
    default=None,
    help="Write the document to this file instead of stdout.",
)
def asyncapi(config_path: Path | None, output: str | None) -> None:
    """Print the AsyncAPI 3.0 document (JSON) of the installed templates' AMQP contract."""
    from pathlib import Path

    from beds.contract import asyncapi_document
    from beds.node import BedsNode, StartupError

    config = load(config_path)
    quiet_logging("ERROR")
    node = BedsNode(config)
    try:
        node.load_plugins()
    except StartupError as exc:
        fail(str(exc), exit_code_of(exc.checks))
    assert node.registry is not None
    text = orjson.dumps(
        asyncapi_document(node.registry, config), option=orjson.OPT_INDENT_2
    ).decode()
    if output is None:
        click.echo(text)
        return
    try:
        Path(output).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", EXIT_FAILED)
