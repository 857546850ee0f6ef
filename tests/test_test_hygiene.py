"""The test suites' own rules: a conftest holds fixtures, and no module imports from one.

Helpers (types, functions, classes) that tests share live in ``helpers.py`` modules (and
``tests/integration/nodes.py``); a conftest may import fixtures from those to register them.
A conftest is loaded by pytest as a plugin: importing it as a module too couples a test to
plugin loading and can give a second copy of it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = [ROOT / "tests", *sorted((ROOT / "packages").glob("*/tests"))]


def conftest_imports(source: str) -> list[int]:
    """The line numbers of the imports from a conftest in ``source``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            modules = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        if any(module.rsplit(".", 1)[-1] == "conftest" for module in modules):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize(
    "source",
    [
        "from .conftest import StartNode",
        "from tests.conftest import Figures",
        "from .amqp.conftest import start_node",
        "from . import conftest",
        "import tests.e2e.conftest",
        "if TYPE_CHECKING:\n    from .conftest import StartNode",
    ],
)
def test_the_check_sees_a_conftest_import(source: str) -> None:
    assert conftest_imports(source) == [source.count("\n") + 1]


def test_the_check_lets_helpers_through() -> None:
    assert conftest_imports("from tests.helpers import Figures\nimport conftests_x\n") == []


def test_the_suites_are_found() -> None:
    files = [path for suite in SUITES for path in suite.rglob("test_*.py")]
    assert ROOT / "tests" / "integration" / "amqp" / "test_control.py" in files
    assert ROOT / "packages" / "beds-core" / "tests" / "test_log.py" in files


def test_no_module_imports_from_a_conftest() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line}"
        for suite in SUITES
        for path in sorted(suite.rglob("*.py"))
        for line in conftest_imports(path.read_text(encoding="utf-8"))
    ]
    assert not offending, (
        "these lines import from a conftest (move what they import to a helpers.py module "
        "and import it from there): " + ", ".join(offending)
    )
