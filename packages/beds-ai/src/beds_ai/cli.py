"""``beds describe-domain``: a domain in words in, a ``description.toml`` to review out.

A plugin command (entry-point group ``beds.commands``). It calls the ``beds_describe_domain``
hook (beds-ai's plugin, or any other that implements it), validates the answer again as a
hand-written description (so no plugin's answer is trusted), and prints or writes its TOML.
Only then, and only when the person asks for it (``--generate`` and a yes at the prompt, or
``beds new-domain NAME --from FILE`` later), the deterministic generator writes every database
object from the file.

Exit codes: 0 written; 1 the endpoint failed or its answers were refused; 2 bad usage or
configuration (no plugin configured, a bad ``BEDS_AI_*`` variable, a file that exists).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from beds.cli.common import EXIT_CONFIG, EXIT_FAILED, fail, quiet_logging

__all__ = ("describe_domain",)


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _generate(
    ctx: click.Context, toml: str, domain: str, out: Path, package_dir: Path | None
) -> None:
    """Show the description, and on a yes run ``beds new-domain`` on the written file."""
    from beds.cli.new_domain import new_domain

    click.echo(toml, nl=False)
    click.echo(f"wrote {out}; the package is generated from it as shown above.", err=True)
    if not click.confirm(f"Generate the package of {domain!r} from {out} now?", default=False):
        click.echo(f"not generated; later: beds new-domain {domain} --from {out}", err=True)
        return
    ctx.invoke(new_domain, name=domain, source=out, out=package_dir)


@click.command("describe-domain")
@click.argument("text")
@click.option(
    "--name",
    default=None,
    help="The domain's name (lower_snake_case); default: the one the model chooses.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the description to this TOML file instead of printing it.",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option(
    "--generate",
    is_flag=True,
    help="After writing --out and showing it, ask whether to run beds new-domain on it.",
)
@click.option(
    "--package-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --generate: the package directory (default: ./beds-NAME).",
)
@click.pass_context
def describe_domain(
    ctx: click.Context,
    text: str,
    name: str | None,
    out: Path | None,
    force: bool,
    generate: bool,
    package_dir: Path | None,
) -> None:
    """Write a domain description from TEXT, a domain in words.

    A TEXT of - is read from stdin. The AI plugin (beds-ai: BEDS_AI_URL, BEDS_AI_MODEL,
    BEDS_AI_KEY or BEDS_AI_KEY_FILE) writes the description only, and it is validated like a
    hand-written one. Review it, then run `beds new-domain NAME --from FILE` (or pass
    --generate), which writes every database object.
    """
    import orjson

    from beds.errors import BedsError, ConfigError
    from beds.generator import DescriptionError
    from beds.generator.description import LIMITS
    from beds.generator.names import name_problem
    from beds.plugins import make_plugin_manager
    from beds_ai.describe import check_answer
    from beds_ai.errors import redact
    from beds_ai.plugin import installed_templates

    quiet_logging("ERROR")
    if generate and out is None:
        fail("--generate needs --out FILE (the description is kept for review)", EXIT_CONFIG)
    if text == "-":
        text = sys.stdin.read()
    if name is not None and (problem := name_problem(name, max_length=LIMITS["domain_name"])):
        fail(f"--name {problem}", EXIT_CONFIG)
    if out is not None and out.exists() and not force:
        fail(f"{out} exists; pass --force to replace it", EXIT_CONFIG)
    asked = text if name is None else f"{text}\n\nThe domain's name is {name!r}."
    try:
        answer = make_plugin_manager(strict=False).hook.beds_describe_domain(text=asked)
    except ConfigError as exc:
        fail(redact(str(exc), None, 2500), EXIT_CONFIG)
    except BedsError as exc:
        fail(redact(str(exc), None, 2500), EXIT_FAILED)
    if answer is None:
        fail(
            "no plugin describes domains: install beds-ai and set BEDS_AI_URL and"
            " BEDS_AI_MODEL (docs/ai.md)",
            EXIT_CONFIG,
        )
    try:
        described = check_answer(
            orjson.dumps(answer).decode(),
            source="the plugin's description",
            name=name,
            installed=installed_templates(),
        )
    except (DescriptionError, TypeError) as exc:
        fail(f"the description is refused: {redact(str(exc), None, 1000)}", EXIT_FAILED)
    if out is None:
        click.echo(described.toml, nl=False)
        return
    _write(out, described.toml)
    domain = described.domain.name
    if generate:
        _generate(ctx, described.toml, domain, out, package_dir)
        return
    click.echo(
        f"wrote {out}: domain {domain!r}, "
        f"{len(described.domain.entities)} entities. Review it, then run:\n"
        f"  beds new-domain {domain} --from {out}",
        err=True,
    )
