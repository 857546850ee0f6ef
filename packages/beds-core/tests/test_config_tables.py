"""``beds.config.structure_table``: a store's table structured by cattrs like the config."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from beds.config import FieldValueError, structure_table
from beds.errors import ConfigError


def _named(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise FieldValueError(attribute.name, "must not be empty")


@attrs.frozen(kw_only=True)
class Table:
    name: str = attrs.field(validator=_named)
    size: int = 1
    ratio: float = 0.5
    flag: bool = False
    hosts: tuple[str, ...] = ()


def structure(**data: Any) -> Table:
    return structure_table(data, Table, key="stores.demo", file="beds.toml")


def test_values_keep_their_types_and_numbers_become_float() -> None:
    table = structure(name="a", size=3, ratio=2, flag=True, hosts=["h1", "h2"])
    assert table == Table(name="a", size=3, ratio=2.0, flag=True, hosts=("h1", "h2"))
    assert isinstance(table.ratio, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "stores.demo.name: is required"),
        ({"name": ""}, "stores.demo.name: must not be empty"),
        ({"name": "a", "zize": 1}, "stores.demo.zize: is not a known key"),
        ({"name": "a", "size": "3"}, "stores.demo.size: must be an integer, got str"),
        ({"name": "a", "size": True}, "stores.demo.size: must be an integer, got bool"),
        ({"name": "a", "ratio": False}, "stores.demo.ratio: must be a number, got bool"),
        ({"name": "a", "flag": 1}, "stores.demo.flag: must be true or false, got 1"),
        ({"name": 1}, "stores.demo.name: must be a string, got int"),
        ({"name": "a", "hosts": "h1"}, "stores.demo.hosts: must be an array, got str"),
        ({"name": "a", "hosts": ["h", 2]}, "stores.demo.hosts[1]: must be a string, got int"),
    ],
)
def test_an_error_names_the_key_and_the_file(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        structure(**data)
    key = message.partition(":")[0]
    assert str(info.value) == f"{message} (file beds.toml, key {key})"
    assert (info.value.key, info.value.file) == (key, "beds.toml")
    # The validation tree may quote values (a URL with its password): it is not chained.
    assert info.value.__cause__ is None


def test_other_problems_are_notes() -> None:
    with pytest.raises(ConfigError) as info:
        structure(name=3, size="x")
    assert str(info.value).startswith("stores.demo.name: must be a string, got int")
    assert info.value.__notes__ == [
        "also stores.demo.size: must be an integer, got str (beds.toml)"
    ]


def test_without_a_file_the_error_names_the_key_only() -> None:
    with pytest.raises(ConfigError) as info:
        structure_table({}, Table, key="stores.demo", file=None)
    assert str(info.value) == "stores.demo.name: is required (key stores.demo.name)"
