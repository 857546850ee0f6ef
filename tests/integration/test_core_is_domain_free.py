"""No core code names the example domain: SPEW is served from its declarations alone.

First, the code of beds-core, beds-rel and beds-rec (names, string values, data files) never
names a SPEW template or database object; documentation (docstrings, comments) may use them as
examples. Second, a fresh virtual environment with only the wheels of beds-core, beds-rel,
beds-rec, beds-identity and beds-templates-example (their dependencies from uv's cache, offline)
lists the SPEW templates: nothing else is needed (docs/writing-a-domain.md).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ("beds-core", "beds-rel", "beds-rec")
SPEW = re.compile(r"spew|\b(?:spp|spf|spn|spb|sps|spl|sfl)_", re.IGNORECASE)
"""The domain's name and its TLA prefixes (posts, profiles, notes, boosts, stats, likes and
follows)."""


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (documentation, not code)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
        # An attribute's docstring: the string statement after an assignment.
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for before, after in itertools.pairwise(body):
                if (
                    isinstance(before, ast.Assign | ast.AnnAssign)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                ):
                    found.add(id(after.value))
    return found


def _named_in_code(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docs = _docstrings(tree)
    where = path.relative_to(ROOT) if ROOT in path.parents else path.name
    found: list[str] = []
    for node in ast.walk(tree):
        texts: list[str] = []
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            texts.append(node.value)
        elif isinstance(node, ast.Name):
            texts.append(node.id)
        elif isinstance(node, ast.Attribute):
            texts.append(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            texts.append(node.name)
        elif isinstance(node, ast.arg):
            texts.append(node.arg)
        found.extend(
            f"{where}:{getattr(node, 'lineno', 0)}: {text!r}" for text in texts if SPEW.search(text)
        )
    return found


def test_the_core_packages_code_names_no_spew_concept() -> None:
    found: list[str] = []
    scanned = 0
    for package in CORE:
        for path in sorted((ROOT / "packages" / package / "src").rglob("*")):
            if path.suffix == ".py":
                found.extend(_named_in_code(path))
            elif path.suffix in {".sql", ".json", ".toml"}:
                text = path.read_text(encoding="utf-8")
                found.extend(
                    f"{path.relative_to(ROOT)}: {match.group(0)!r}" for match in SPEW.finditer(text)
                )
            else:
                continue
            scanned += 1
    assert scanned > 100  # the scan saw the packages
    assert found == []


def test_the_scan_finds_a_spew_name_in_code_but_not_in_documentation(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        '"""Docs may say spew_post."""\n'
        "# and so may comments: spp_create\n"
        "X = 1\n"
        '"""An attribute docstring naming spf_profiles."""\n'
        'def call() -> str:\n    return "spp_create"\n',
        encoding="utf-8",
    )
    found = _named_in_code(module)
    assert [line.rsplit(": ", 1)[1] for line in found] == ["'spp_create'"]


def _uv() -> str:
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(uv).exists(), "uv is needed to build the wheels (the dev tools' .tools/bin/uv)"
    return uv


@pytest.mark.slow
def test_a_clean_environment_with_only_the_wheels_serves_spew(tmp_path: Path) -> None:
    uv = _uv()
    # uv's cache only: the environment is built offline, from what the workspace already has.
    env = {**os.environ, "UV_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith(("BEDS_", "VIRTUAL_ENV"))}
    wheels = tmp_path / "wheels"
    packages = (*CORE, "beds-identity", "beds-templates-example")
    for package in packages:
        # A copy of the package alone: built as a user would, outside the uv workspace.
        source = tmp_path / "src" / package
        source.mkdir(parents=True)
        for part in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / "packages" / package / part, source / part)
        shutil.copytree(
            ROOT / "packages" / package / "src",
            source / "src",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        run([uv, "build", "--quiet", "--wheel", "--out-dir", str(wheels), str(source)], env)
    venv = tmp_path / "venv"
    interpreter = str(ROOT / ".nox" / "integration" / "bin" / "python")
    run([uv, "venv", "--quiet", str(venv), "--python", interpreter], env)
    python = str(venv / "bin" / "python")
    run([uv, "pip", "install", "--quiet", "--python", python, *map(str, wheels.glob("*.whl"))], env)
    config = tmp_path / "beds.toml"
    # Adapters are built, never connected, to list templates: the URLs lead nowhere.
    config.write_text(
        'schema_version = 1\n[stores.rec]\nuri = "mongodb://127.0.0.1:9/"\ndatabase = "x"\n'
        '[stores.rel]\nurl = "mysql://nobody@127.0.0.1:9/x"\n',
        encoding="utf-8",
    )
    listed = run([python, "-m", "beds", "templates", "--json", "--config", str(config)], env)
    templates = {t["name"]: t["distribution"] for t in json.loads(listed)}
    spew = {name for name, dist in templates.items() if dist == "beds-templates-example"}
    assert spew == {
        "spew_boost",
        "spew_follow",
        "spew_like",
        "spew_note",
        "spew_post",
        "spew_profile",
        "spew_stats",
    }
    installed = run([uv, "pip", "list", "--python", python, "--format", "json"], env)
    ours = sorted(p["name"] for p in json.loads(installed) if p["name"].startswith("beds"))
    assert ours == sorted(packages)


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, f"{command[:3]}: {done.stderr}"
    return done.stdout
