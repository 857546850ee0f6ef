"""The [stores.rel] table: defaults, URL parsing, and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from beds.errors import ConfigError
from beds.namaste import StoreSettings
from beds_rel.settings import RelSettings, parse_settings

URL = "mysql://app:s3cret@db.example:3307/spew"


def parse(**options: Any) -> RelSettings:
    return parse_settings(StoreSettings(store="rel", options=options, file="beds.toml"))


def test_defaults_and_url_parts() -> None:
    config = parse(url=URL)
    assert config == RelSettings(
        host="db.example", port=3307, user="app", password="s3cret", database="spew"
    )
    assert (config.pool_min, config.pool_max, config.connect_timeout) == (1, 10, 5.0)
    assert "s3cret" not in repr(config)


def test_options_and_percent_encoded_credentials() -> None:
    config = parse(
        url="mariadb://us%40er:p%3Aw%2Fd@127.0.0.1/db_1",
        pool_min=0,
        pool_max=3,
        connect_timeout=0.5,
    )
    assert (config.user, config.password, config.port) == ("us@er", "p:w/d", 3306)
    assert (config.pool_min, config.pool_max, config.connect_timeout) == (0, 3, 0.5)


def test_connect_kwargs_set_utc_and_autocommit() -> None:
    kwargs = parse(url=URL).connect_kwargs()
    assert kwargs["database"] == "spew"
    assert kwargs["autocommit"] is True
    assert kwargs["init_command"] == "SET time_zone = '+00:00'"
    assert "database" not in parse(url=URL).connect_kwargs(with_database=False)


@pytest.mark.parametrize(
    ("options", "key", "message"),
    [
        ({}, "url", "url: is required"),
        ({"url": URL, "pool_size": 3}, "pool_size", "pool_size: is not a known key"),
        ({"url": 3306}, "url", "url: must be a string, got int"),
        ({"url": "postgres://u@h/db"}, "url", "must start with mysql:// or mariadb://"),
        ({"url": "mysql://u:s3cret@h:99999/db"}, "url", "is not a valid URL"),
        ({"url": "mysql://u:s3cret@h/db?ssl=1"}, "url", "takes no query string"),
        ({"url": "mysql://u:s3cret@/db"}, "url", "must name a host"),
        ({"url": "mysql://h/db"}, "url", "must name a user"),
        ({"url": "mysql://u:s3cret@h"}, "url", "must end with a database name"),
        ({"url": "mysql://u:s3cret@h/a`b"}, "url", "must end with a database name"),
        ({"url": URL, "pool_min": -1}, "pool_min", "pool_min: must be at least 0, got -1"),
        ({"url": URL, "pool_min": True}, "pool_min", "pool_min: must be an integer, got bool"),
        ({"url": URL, "pool_min": "1"}, "pool_min", "pool_min: must be an integer, got str"),
        ({"url": URL, "pool_max": 0}, "pool_max", "pool_max: must be at least 1, got 0"),
        ({"url": URL, "pool_min": 5, "pool_max": 2}, "pool_max", "at least pool_min (5)"),
        ({"url": URL, "connect_timeout": 0}, "connect_timeout", "more than 0"),
        ({"url": URL, "connect_timeout": "5"}, "connect_timeout", "must be a number, got str"),
        ({"url": URL, "secondaries": URL}, "secondaries", "must be an array, got str"),
        (
            {"url": URL, "secondaries": [URL, "mysql://u:s3cret@h"]},
            "secondaries[1]",
            "secondaries[1]: must end with a database name",
        ),
    ],
)
def test_errors_name_file_and_key(options: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**options)
    assert info.value.key == f"stores.rel.{key}"
    assert info.value.file == "beds.toml"
    assert str(info.value).startswith(f"stores.rel.{key}: ")
    assert message in str(info.value)
    assert str(info.value).endswith(f"(file beds.toml, key stores.rel.{key})")
    assert info.value.__cause__ is None
    assert "s3cret" not in str(info.value)


def test_idempotency_is_on_by_default_and_can_be_turned_off() -> None:
    assert parse(url=URL).idempotency is True
    assert parse(url=URL, idempotency=False).idempotency is False
    with pytest.raises(ConfigError) as caught:
        parse(url=URL, idempotency="no")
    assert caught.value.key == "stores.rel.idempotency"
    assert "must be true or false" in str(caught.value)


def test_secondaries_take_the_timeout_and_numbers_become_float() -> None:
    config = parse(url=URL, secondaries=["mysql://r@replica/spew"], connect_timeout=2)
    assert config.connect_timeout == 2.0
    assert isinstance(config.connect_timeout, float)
    (replica,) = config.secondaries
    assert (replica.host, replica.user, replica.database) == ("replica", "r", "spew")
    assert replica.connect_timeout == 2.0
