"""cattrs structuring for configuration: the converters and errors that name key and file.

:func:`beds.config.load_config` structures the merged layers with :data:`converter`;
:func:`structure_table` structures one table the loader hands on unvalidated, such as a store's
``[stores.<name>]`` (each adapter's ``settings.py``), with the same error style.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import IterableValidationNote
from cattrs.gen import make_dict_structure_fn, make_mapping_structure_fn
from cattrs.preconf.tomllib import make_converter

from beds.config.model import FieldValueError
from beds.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ("config_error", "converter", "structure_table")

T = TypeVar("T")

converter = make_converter(forbid_extra_keys=True, detailed_validation=True)


def _structure_choice(value: object, kind: Any) -> object:
    """A Literal-typed key: say which values are allowed (``must be "requests" or "logs"``)."""
    allowed = get_args(kind)
    if value in allowed:
        return value
    choices = " or ".join(
        f'"{choice}"' if isinstance(choice, str) else str(choice) for choice in allowed
    )
    raise ValueError(f"must be {choices}, got {value!r}")


def _is_choice(kind: Any) -> bool:
    origin: object = get_origin(kind)
    return origin is Literal


converter.register_structure_hook_func(_is_choice, _structure_choice)


def _is_table(kind: Any) -> bool:
    """A key whose value must be a TOML table: a settings class or a ``dict[...]``."""
    return attrs.has(kind) or get_origin(kind) is dict


def _tables_first(converter: cattrs.Converter) -> Callable[[Any], Any]:
    """A hook factory: refuse a value that is not a table before structuring it.

    cattrs would otherwise fail inside, with Python's words ("'str' object has no attribute
    'keys'"); ``tls = "x"`` deserves ``must be a table, got str``.
    """

    def factory(kind: Any) -> Callable[[object, Any], object]:
        if attrs.has(kind):
            inner = make_dict_structure_fn(
                kind,
                converter,
                _cattrs_forbid_extra_keys=True,
                _cattrs_detailed_validation=True,
            )
        else:
            # Not converter.gen_structure_mapping: it registers its function for the type
            # directly, so a later value of that type (``http = true``) would skip this check.
            inner = make_mapping_structure_fn(
                kind, converter, dict, detailed_validation=converter.detailed_validation
            )

        def structure(value: object, target: Any) -> object:
            if not isinstance(value, dict):
                raise ValueError(f"must be a table, got {type(value).__name__}")
            return inner(value, target)

        return structure

    return factory


converter.register_structure_hook_factory(_is_table, _tables_first(converter))


def _strict(kind: type, expected: str) -> Any:
    """A hook that takes a value of ``kind`` as it is (an int for a float) and refuses others."""
    accepted: tuple[type, ...] = (int, float) if kind is float else (kind,)

    def structure(value: object, _: object) -> object:
        # bool is an int subclass, but `pool_max = true` is no number.
        if isinstance(value, bool) is not (kind is bool) or not isinstance(value, accepted):
            got = repr(value) if kind is bool else type(value).__name__
            raise ValueError(f"must be {expected}, got {got}")
        return float(value) if kind is float else value  # type: ignore[arg-type]

    return structure


def _is_array(kind: Any) -> bool:
    args = get_args(kind)
    return get_origin(kind) is list or (get_origin(kind) is tuple and args[1:] == (...,))


def _structure_array(value: object, kind: Any) -> object:
    """``list[X]`` or ``tuple[X, ...]`` from a TOML array only (a string is no array of letters)."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be an array, got {type(value).__name__}")
    item_kind = get_args(kind)[0]
    items: list[object] = []
    errors: list[Exception] = []
    for index, item in enumerate(value):
        try:
            items.append(_tables.structure(item, item_kind))
        except Exception as exc:
            exc.add_note(IterableValidationNote(f"Structuring @ index {index}", index, item_kind))
            errors.append(exc)
    if errors:
        raise cattrs.IterableValidationError(f"While structuring {kind!r}", errors, kind)
    return tuple(items) if get_origin(kind) is tuple else items


_tables = make_converter(forbid_extra_keys=True, detailed_validation=True)
"""Store tables (``[stores.<name>]``): like ``converter``, but a value must already have its
key's type (TOML gives every type it can hold), so ``pool_max = "5"`` or ``= true`` is refused."""
_tables.register_structure_hook_func(_is_choice, _structure_choice)
_tables.register_structure_hook(bool, _strict(bool, "true or false"))
_tables.register_structure_hook(int, _strict(int, "an integer"))
_tables.register_structure_hook(float, _strict(float, "a number"))
_tables.register_structure_hook(str, _strict(str, "a string"))
_tables.register_structure_hook_func(_is_array, _structure_array)
_tables.register_structure_hook_factory(_is_table, _tables_first(_tables))


def _walk(exc: BaseException, path: str) -> list[tuple[str, str]]:
    """Flatten a cattrs validation error tree into (dotted key path, message) pairs."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return [
            (f"{path}.{key}".lstrip("."), "is not a known key") for key in sorted(exc.extra_fields)
        ]
    found: list[tuple[str, str]] = []
    if isinstance(exc, cattrs.ClassValidationError):
        noted, plain = exc.group_exceptions()
        for sub, note in noted:
            found += _walk(sub, f"{path}.{note.name}")
        for sub in plain:
            found += _walk(sub, path)
        return found
    if isinstance(exc, cattrs.IterableValidationError):
        noted_items, plain = exc.group_exceptions()
        for sub, item in noted_items:
            index = item.index
            found += _walk(sub, f"{path}.{index}" if isinstance(index, str) else f"{path}[{index}]")
        for sub in plain:
            found += _walk(sub, path)
        return found
    if isinstance(exc, cattrs.BaseValidationError):
        for sub in exc.exceptions:
            found += _walk(sub, path)
        return found
    if isinstance(exc, FieldValueError):
        return [(f"{path}.{exc.field}".lstrip("."), str(exc))]
    if isinstance(exc, KeyError):
        return [(path.lstrip("."), "is required")]
    return [(path.lstrip("."), str(exc) or type(exc).__name__)]


def config_error(
    exc: cattrs.BaseValidationError, prefix: str, origin_of: Callable[[str], str | None]
) -> ConfigError:
    """The first problem, naming its key and file; the others as notes."""
    problems = sorted(_walk(exc, prefix))
    key, message = problems[0]
    error = ConfigError(f"{key}: {message}", file=origin_of(key), key=key)
    for other_key, other_message in problems[1:]:
        origin = origin_of(other_key)
        error.add_note(f"also {other_key}: {other_message}" + (f" ({origin})" if origin else ""))
    return error


def structure_table(data: Mapping[str, Any], kind: type[T], *, key: str, file: str | None) -> T:
    """Structure one configuration table into an attrs class, as :func:`load_config` does.

    For a table the loader hands on unvalidated, such as a store's ``[stores.<name>]`` (see
    :class:`beds.namaste.StoreSettings`). Unknown keys are refused; a value must already have
    its key's type (no ``"5"`` for an integer); attrs validators raise
    :class:`~beds.config.model.FieldValueError` to name their key.

    Args:
        data: the table.
        kind: the attrs class that describes it.
        key: the table's dotted key path, for example ``stores.rel``.
        file: the config file that set the table, for error messages.

    Raises:
        ConfigError: ``"<key path>: <problem>"`` naming the key and the file; the other problems
            are attached as notes. The error has no cause: values may hold passwords.
    """
    try:
        return _tables.structure(dict(data), kind)
    except cattrs.BaseValidationError as exc:
        raise config_error(exc, key, lambda _: file) from None
