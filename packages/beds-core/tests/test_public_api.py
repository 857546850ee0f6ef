"""Every public module declares its API in a tuple ``__all__`` whose names all exist."""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata
from pathlib import Path

import pluggy
import pytest

import beds

PUBLIC_MODULES = (
    "beds",
    "beds.errors",
    "beds.envelopes",
    "beds.codec",
    "beds.namaste",
    "beds.values",
    "beds.templates",
    "beds.hookspecs",
    "beds.plugins",
    "beds.registry",
)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_attributes(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, tuple)
    assert exported, f"{name}.__all__ is empty"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [attr for attr in exported if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names attributes that do not exist: {missing}"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_classes_and_functions_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__
    for attr in module.__all__:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"


def test_version() -> None:
    assert beds.__version__ == metadata.version("beds-core")


def test_hookimpl_marks_beds_hooks() -> None:
    assert isinstance(beds.hookimpl, pluggy.HookimplMarker)
    assert beds.hookimpl.project_name == "beds"


def test_package_is_typed() -> None:
    assert (Path(beds.__file__).parent / "py.typed").is_file()
