from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds.errors import ConfigError
from beds.namaste import StoreSettings
from beds_rec.settings import RecSettings, parse_settings


def settings(**options: Any) -> StoreSettings:
    return StoreSettings(store="rec", options=options, file="beds.toml")


def test_defaults_select_the_embedded_server() -> None:
    parsed = parse_settings(settings(database="beds_dev"))
    assert parsed == RecSettings(
        uri=None,
        database="beds_dev",
        server_selection_timeout=5.0,
        embedded_path=Path(".beds/secantus"),
    )
    assert parsed.embedded


def test_embedded_keyword_and_uri() -> None:
    assert parse_settings(settings(uri="embedded", database="d")).uri is None
    parsed = parse_settings(
        settings(uri="mongodb://127.0.0.1:27017/", database="d", server_selection_timeout=1)
    )
    assert parsed.uri == "mongodb://127.0.0.1:27017/"
    assert parsed.server_selection_timeout == 1.0
    assert not parsed.embedded


def test_production_flag_is_kept() -> None:
    options = {"database": "d", "uri": "mongodb://db.example:27017/"}
    parsed = parse_settings(StoreSettings(store="rec", options=options, production=True))
    assert parsed.production


@pytest.mark.parametrize(
    ("options", "key", "words"),
    [
        ({"database": "d", "url": "mongodb://x/"}, "stores.rec.url", "is not a known key"),
        ({}, "stores.rec.database", "is required"),
        ({"database": ""}, "stores.rec.database", "database name"),
        ({"database": "a.b"}, "stores.rec.database", "database name"),
        ({"database": 3}, "stores.rec.database", "must be a string, got int"),
        ({"database": "d", "uri": 5}, "stores.rec.uri", "must be a string"),
        ({"database": "d", "uri": "mysql://x/"}, "stores.rec.uri", "mongodb://"),
        ({"database": "d", "uri": "mongodb://h:99999/"}, "stores.rec.uri", "not a valid"),
        ({"database": "d", "uri": "mongodb://h/?bogusOption=1"}, "stores.rec.uri", "not a valid"),
        (
            {"database": "d", "server_selection_timeout": 0},
            "stores.rec.server_selection_timeout",
            "positive",
        ),
        (
            {"database": "d", "server_selection_timeout": True},
            "stores.rec.server_selection_timeout",
            "must be a number, got bool",
        ),
        (
            {"database": "d", "server_selection_timeout": "5"},
            "stores.rec.server_selection_timeout",
            "must be a number, got str",
        ),
        ({"database": "d", "embedded_path": ""}, "stores.rec.embedded_path", "non-empty"),
        ({"database": "d", "embedded_path": 1}, "stores.rec.embedded_path", "must be a string"),
    ],
)
def test_errors_name_the_key_and_file(options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(**options))
    assert caught.value.key == key
    assert caught.value.file == "beds.toml"
    assert str(caught.value).startswith(f"{key}: ")
    assert words in str(caught.value)
    assert str(caught.value).endswith(f"(file beds.toml, key {key})")


def test_uri_error_does_not_leak_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", uri="mongodb://user:s3cret@h:99999/"))
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_the_first_unknown_key_is_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", zeta=1, alpha=2))
    assert caught.value.key == "stores.rec.alpha"


@given(
    st.text(min_size=1, max_size=20).filter(
        lambda k: k not in {"uri", "database", "server_selection_timeout", "embedded_path"}
    )
)
def test_any_unknown_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", **{key: 1}))
    assert caught.value.key == f"stores.rec.{key}"


def test_idempotency_is_on_by_default_and_can_be_turned_off() -> None:
    assert parse_settings(settings(database="d")).idempotency is True
    assert parse_settings(settings(database="d", idempotency=False)).idempotency is False
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings(database="d", idempotency=1))
    assert caught.value.key == "stores.rec.idempotency"
    assert "must be true or false" in str(caught.value)
