"""The event loop ``beds run`` serves on: uvloop when it is installed, else asyncio's own.

uvloop (``pip install 'beds-core[uvloop]'``) makes a node about 10 % faster (docs/benchmarks.md).
The environment variable ``BEDS_EVENT_LOOP`` chooses: ``auto`` (the default: uvloop if it can be
imported), ``uvloop`` (required: an error if it is not installed) or ``asyncio``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Coroutine, Mapping

__all__ = ("EVENT_LOOP_VARIABLE", "choose_event_loop", "run")

EVENT_LOOP_VARIABLE: Final = "BEDS_EVENT_LOOP"
_CHOICES: Final = ("auto", "uvloop", "asyncio")
_T = TypeVar("_T")


def choose_event_loop(environ: Mapping[str, str] | None = None) -> Literal["uvloop", "asyncio"]:
    """The loop ``BEDS_EVENT_LOOP`` asks for, ``auto`` resolved.

    Raises:
        ConfigError: the variable has another value, or asks for uvloop, which is not installed.
    """
    environ = os.environ if environ is None else environ
    choice = environ.get(EVENT_LOOP_VARIABLE, "").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError(f"{EVENT_LOOP_VARIABLE}={choice!r}: use one of {', '.join(_CHOICES)}")
    if choice == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if choice == "uvloop":
        raise ConfigError(
            f"{EVENT_LOOP_VARIABLE}=uvloop, but uvloop is not installed "
            "(pip install 'beds-core[uvloop]')"
        )
    return "asyncio"


def run(main: Coroutine[Any, Any, _T], loop: Literal["uvloop", "asyncio"]) -> _T:
    """``asyncio.run(main)`` on the chosen loop."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
