"""Sphinx configuration for the BEDS documentation (Markdown through myst-parser, furo theme).

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``nox -s docs``).
"""

from __future__ import annotations

import importlib
import re
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from docutils.nodes import Element
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

project = "BEDS"
author = "The BEDS developers"
copyright = "the BEDS developers"
release = _version("beds-core")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# docs/benchmarks/*.md are written by the benchmark suite and included into benchmarks.md.
exclude_patterns = [
    "_build",
    "examples",
    "benchmarks/*.md",
    "benchmarks/issue19/*.md",
    "Thumbs.db",
    ".DS_Store",
]

# MyST: ::: fences for directives, definition lists, and anchors for ## and ### headings.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: only the public modules are documented (docs/api.md, docs/hooks.md). Type hints go
# into the parameter descriptions; names imported only under TYPE_CHECKING stay plain text.
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# References to objects outside the documented public modules (private helpers, third-party
# types such as aiormq's) are left unresolved quietly rather than failing the -W build.
nitpicky = False

html_theme = "furo"
html_title = f"BEDS {release}"
pygments_style = "sphinx"
pygments_dark_style = "monokai"


# Package READMEs are included into the adapter pages. Their links are written for the
# repository (for example ``../../README.md``) and have no target in the documentation, so the
# included copy keeps only the link text of relative links.
_RELATIVE_LINK = re.compile(r"(!?)\[([^\]]*)\]\((?![a-z][a-z0-9+.-]*:|#)[^)\s]*\)")


def _unlink_relative(match: re.Match[str]) -> str:
    return match.group(2)


def _on_include_read(
    app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]
) -> None:
    if relative_path.name == "README.md":
        content[0] = _RELATIVE_LINK.sub(_unlink_relative, content[0])


# BEDS writes attribute docstrings as prose ("CALGON: poll a ticket.") and takes types from the
# annotations. napoleon would read such a first line as "type: description", so attribute
# docstrings are restored to their original text after napoleon has run.
_ATTRIBUTE_KINDS = frozenset({"attribute", "data", "property"})
_attribute_docstrings: dict[str, list[str]] = {}


def _keep_attribute_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what in _ATTRIBUTE_KINDS:
        _attribute_docstrings[name] = list(lines)


def _restore_attribute_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    if what in _ATTRIBUTE_KINDS and name in _attribute_docstrings:
        lines[:] = _attribute_docstrings.pop(name)


# The public classes are documented once, under ``beds`` (docs/api.md), where users import them
# from. A reference through the module that defines one (``beds.errors.ConfigError``,
# ``beds.client.BedsClient.call``) is resolved to that documentation.
def _public_name(target: str) -> str | None:
    import beds

    parts = target.split(".")
    for end in range(len(parts), 2, -1):
        module, name = ".".join(parts[: end - 1]), parts[end - 1]
        if module == "beds" or not module.startswith("beds.") or name not in beds.__all__:
            continue
        try:
            defined = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if defined is getattr(beds, name):
            return ".".join(["beds", *parts[end - 1 :]])
    return None


def _on_missing_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    if node.get("refdomain") != "py":
        return None
    public = _public_name(node["reftarget"])
    if public is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


def setup(app: Sphinx) -> None:
    app.connect("include-read", _on_include_read)
    app.connect("missing-reference", _on_missing_reference)
    # napoleon handles autodoc-process-docstring at the default priority, 500.
    app.connect("autodoc-process-docstring", _keep_attribute_docstring, priority=400)
    app.connect("autodoc-process-docstring", _restore_attribute_docstring, priority=600)
