"""``beds`` exports what users import, docs/api.md documents exactly that, and it loads lazily."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import beds

API_PAGE = Path(__file__).resolve().parents[3] / "docs" / "api.md"

_DIRECTIVE = re.compile(r"^\.\. (auto\w+|py:\w+):: (\S+)\n((?:(?:   .*)?\n)*)", re.MULTILINE)


def documented_names() -> list[str]:
    """The names the ``beds`` section of docs/api.md documents, in page order."""
    text = API_PAGE.read_text(encoding="utf-8")
    section = text.split("\n## `beds`\n", 1)[1].split("\n## ", 1)[0]
    names = []
    for directive, target, options in _DIRECTIVE.findall(section):
        if directive == "automodule":
            assert target == "beds"
            continue
        if directive.startswith("auto"):
            module, _, name = target.rpartition(".")
            assert module == "beds", f"{target}: document it as beds.{name}"
        else:
            assert "   :module: beds\n" in options, f"{directive} {target} needs :module: beds"
            name = target
        names.append(name)
    return names


def test_the_api_page_documents_exactly_what_beds_exports() -> None:
    documented = documented_names()
    twice = sorted({name for name in documented if documented.count(name) > 1})
    assert not twice, f"documented twice on docs/api.md: {twice}"
    assert sorted(documented) == sorted(beds.__all__)


def test_beds_lists_every_public_name() -> None:
    assert set(beds.__all__) <= set(dir(beds))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'beds' has no attribute 'Nope'"):
        _ = beds.Nope


def all_modules() -> list[str]:
    """Every module of ``beds`` (``beds.__main__`` aside: importing it runs the command)."""
    names = [module.name for module in pkgutil.walk_packages(beds.__path__, "beds.")]
    return sorted(name for name in names if name != "beds.__main__")


@pytest.mark.parametrize("name", all_modules())
def test_only_what_beds_exports_claims_to_live_in_beds(name: str) -> None:
    module = importlib.import_module(name)
    for attribute, value in vars(module).items():
        if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == "beds":
            assert value.__name__ in beds.__all__, (
                f"{name}.{attribute} sets __module__ = 'beds', which does not export it"
            )
            assert getattr(beds, value.__name__) is value


def test_import_beds_loads_only_the_errors() -> None:
    code = (
        "import sys, beds\n"
        "print(sorted(m for m in sys.modules if m.startswith('beds')))\n"
        "print(sorted(m for m in ('aiormq', 'pluggy', 'attrs', 'tomlkit') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded, heavy = result.stdout.splitlines()
    assert loaded == "['beds', 'beds.errors']"
    assert heavy == "[]"


def test_a_public_name_is_imported_on_first_use() -> None:
    code = (
        "import sys, beds\n"
        "assert 'beds.client' not in sys.modules\n"
        "from beds import BedsClient\n"
        "import beds.client\n"
        "assert BedsClient is beds.client.BedsClient\n"
        "assert 'BedsClient' in vars(beds)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
