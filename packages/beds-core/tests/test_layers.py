"""beds-core's layers hold and no module of ``beds`` is in an import cycle.

The layers are written down in docs/architecture.md ("Layers and the modules that own them");
``LAYERS`` below is the same table, and a test keeps the two equal. A module may import
modules of its own layer and of the layers below it, never of a layer above; and no chain of
imports may lead from a module back to itself.

Every ``import`` and ``from … import`` statement counts, wherever it stands: at module level, in
a function (a deferred import is still a dependency), and under ``if TYPE_CHECKING:`` (a type
that names a higher layer is a dependency on it too). Only imports written as statements are
seen: ``importlib.import_module("beds.x")`` is not (``beds/__init__.py`` repeats its lazy
imports under ``TYPE_CHECKING`` so that they are). The source is read with :mod:`ast`: nothing
is imported or run, so the test costs a few milliseconds and needs no dependency
(docs/dependencies.md says why not import-linter).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import attrs
import pytest

LAYERS: tuple[tuple[str, ...], ...] = (
    ("beds.values", "beds.envelopes", "beds.bugs"),
    ("beds.errors", "beds.nodeinfo"),
    ("beds.codec", "beds.lineage", "beds.routing"),
    (
        "beds.config",
        "beds.templates",
        "beds.namaste",
        "beds.pagination",
        "beds.idempotency",
        "beds.auth",
        "beds.policy",
        "beds.log",
        "beds.eventloop",
        "beds.provision.needs",
        "beds.calgon.tickets",
        "beds.migrations",
    ),
    (
        "beds.hookspecs",
        "beds.registry",
        "beds.handlers",
        "beds.plugins",
        "beds.factory",
        "beds.generator",
    ),
    ("beds.dispatch", "beds.contract"),
    ("beds.transport", "beds.wire_limits", "beds.dlq"),
    ("beds.client",),
    ("beds.broker", "beds.calgon"),
    ("beds.heartbeat", "beds.telemetry"),
    ("beds.ipl", "beds.node", "beds.provision", "beds.supervisor"),
    ("beds.testing",),
    ("beds",),
    ("beds.cli", "beds.__main__"),
)
"""Bottom to top. A name stands for the module or package and everything inside it; ``beds``
alone is the package's ``__init__`` (the public API), not its submodules."""

ROOT = Path(__file__).resolve().parents[3]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


@attrs.frozen
class Import:
    """One import statement of one module."""

    source: str
    target: str
    line: int


def package_dir() -> Path:
    spec = importlib.util.find_spec("beds")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def module_files(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """The ``beds`` modules that ``source`` (module ``name``) imports, statement by statement.

    ``from beds.x import y`` imports ``beds.x.y`` when that is a module, else ``beds.x``. An
    import of something that is not a module of ``beds`` is resolved to its closest enclosing
    module.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            edge = Import(name, target, node.lineno)
            if target in known and target != name and edge not in found:
                found.append(edge)
    return found


def import_graph() -> tuple[dict[str, str], list[Import]]:
    """Every module of ``beds`` with its file (for messages), and every import between them."""
    package = package_dir()
    files = module_files(package)
    known = set(files)
    edges = []
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        edges += imports_of(name, source, path.name == "__init__.py", known)
    return {name: str(path.relative_to(package.parent)) for name, path in files.items()}, edges


def layer_of(module: str) -> int | None:
    """The layer (1 is the bottom, as in docs/architecture.md) of the longest name covering it."""
    best: tuple[int, int] | None = None
    for number, names in enumerate(LAYERS, start=1):
        for layer_name in names:
            covers = module == layer_name or (
                layer_name != "beds" and module.startswith(layer_name + ".")
            )
            if covers and (best is None or len(layer_name) > best[0]):
                best = (len(layer_name), number)
    return None if best is None else best[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_every_module_has_a_layer() -> None:
    files, _ = import_graph()
    missing = [name for name in files if layer_of(name) is None]
    assert not missing, (
        f"modules without a layer: {missing}; add each to LAYERS here and to the table in "
        "docs/architecture.md"
    )


def test_no_import_goes_up_a_layer() -> None:
    files, edges = import_graph()
    upward = [
        f"{files[edge.source]}:{edge.line}: {edge.source} (layer {layer_of(edge.source)}) "
        f"imports {edge.target} (layer {layer_of(edge.target)})"
        for edge in edges
        if (layer_of(edge.target) or 0) > (layer_of(edge.source) or 0)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    files, edges = import_graph()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for edge in edges:
        graph[edge.source].add(edge.target)
    found = cycles(graph)
    report = []
    for component in found:
        members = set(component)
        report.append(" <-> ".join(component))
        report += [
            f"    {files[edge.source]}:{edge.line}: {edge.source} imports {edge.target}"
            for edge in edges
            if edge.source in members and edge.target in members
        ]
    assert not found, "import cycles:\n" + "\n".join(report)


def documented_layers() -> list[tuple[str, ...]]:
    """The layer table of docs/architecture.md, bottom to top: the modules named in each row."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Layers and the modules that own them", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| *(\d+) *\|([^|]*)\|", section, flags=re.MULTILINE)
    assert rows, "docs/architecture.md has no layer table"
    assert [int(number) for number, _ in rows] == list(range(1, len(rows) + 1))
    return [tuple(re.findall(r"`(beds[\w.]*)`", modules)) for _, modules in rows]


def test_the_documented_layers_are_the_tested_layers() -> None:
    assert documented_layers() == list(LAYERS)


# The scanner itself: it must see every kind of import, or the tests above prove nothing.

KNOWN = {"beds", "beds.a", "beds.a.b", "beds.a.c", "beds.d"}


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("import beds.d", "beds.d"),
        ("import beds.d as dee", "beds.d"),
        ("from beds import d", "beds.d"),
        ("from beds import hookimpl", "beds"),
        ("from beds.a import c", "beds.a.c"),
        ("from beds.a import something", "beds.a"),
        ("from beds.a.c import Thing", "beds.a.c"),
        ("from . import c", "beds.a.c"),
        ("from .c import Thing", "beds.a.c"),
        ("from .. import d", "beds.d"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from beds.d import T", "beds.d"),
        ("def f():\n    from beds.d import x\n    return x", "beds.d"),
        ("class C:\n    def m(self):\n        import beds.d", "beds.d"),
        ("try:\n    import beds.d\nexcept ImportError:\n    pass", "beds.d"),
    ],
)
def test_the_scanner_sees_every_import(source: str, target: str) -> None:
    found = imports_of("beds.a.b", source, is_package=False, known=KNOWN)
    assert [edge.target for edge in found] == [target]


def test_the_scanner_ignores_other_packages_and_itself() -> None:
    source = "import os\nfrom attrs import frozen\nimport beds_rec\nfrom beds.a.b import x"
    assert imports_of("beds.a.b", source, is_package=False, known=KNOWN) == []


def test_relative_imports_in_a_package_init() -> None:
    found = imports_of("beds.a", "from .c import x\nfrom . import b", is_package=True, known=KNOWN)
    assert [edge.target for edge in found] == ["beds.a.c", "beds.a.b"]


def test_cycles_are_found_through_any_length() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("beds", 13),
        ("beds.errors", 2),
        ("beds.dispatch.plan", 6),
        ("beds.broker.pool", 9),
        ("beds.transport.frames", 7),
        ("beds.cli.run", 14),
        ("beds.unknown", None),
    ],
)
def test_a_module_takes_the_layer_of_its_closest_name(module: str, layer: int | None) -> None:
    assert layer_of(module) == layer


LONG_MODULE_LINES = 350
"""A module longer than this says why in its docstring (a line starting "Why this module is
long:"), so a module that grew several jobs is split instead of growing on."""


def test_a_long_module_says_why_it_is_long() -> None:
    unexplained = []
    for name, path in module_files(package_dir()).items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        said = any(line.startswith("Why this module is long:") for line in docstring.splitlines())
        if lines > LONG_MODULE_LINES and not said:
            unexplained.append(f"{name} ({lines} lines)")
    assert not unexplained, (
        f"modules over {LONG_MODULE_LINES} lines without 'Why this module is long:' in their "
        f"docstring (split them, or say why not): {', '.join(unexplained)}"
    )
