"""The BEDS_AI_* variables: every bad value is a ConfigError naming the variable, never the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds.errors import ConfigError
from beds_ai.settings import settings_from_env

KEY = "sk-settings-SECRET-4242"
BASE = {"BEDS_AI_URL": "https://llm.example.test/v1", "BEDS_AI_MODEL": "m"}


def test_unset_url_means_not_configured() -> None:
    assert settings_from_env({}) is None
    assert settings_from_env({"BEDS_AI_MODEL": "m", "BEDS_AI_KEY": KEY}) is None


def test_a_full_configuration() -> None:
    settings = settings_from_env(
        {**BASE, "BEDS_AI_KEY": KEY, "BEDS_AI_TIMEOUT": "30", "BEDS_AI_RETRIES": "0"}
    )
    assert settings is not None
    assert (settings.url, settings.model, settings.key) == (BASE["BEDS_AI_URL"], "m", KEY)
    assert (settings.timeout, settings.retries) == (30.0, 0)
    assert KEY not in repr(settings)
    assert str(settings.completions_url) == "https://llm.example.test/v1/chat/completions"


def test_the_query_of_the_url_is_kept() -> None:
    settings = settings_from_env({**BASE, "BEDS_AI_URL": "https://h.test/openai/?api-version=2"})
    assert settings is not None
    assert str(settings.completions_url) == "https://h.test/openai/chat/completions?api-version=2"


def test_the_key_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(f"{KEY}\n", encoding="utf-8")
    settings = settings_from_env({**BASE, "BEDS_AI_KEY_FILE": str(secret)})
    assert settings is not None
    assert settings.key == KEY


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"BEDS_AI_MODEL": ""}, "BEDS_AI_MODEL is required when BEDS_AI_URL is set"),
        ({"BEDS_AI_URL": "ftp://h.test/v1"}, "BEDS_AI_URL must be an http:// or https:// URL"),
        ({"BEDS_AI_URL": "file:///etc/passwd"}, "BEDS_AI_URL must be an http:// or https:// URL"),
        ({"BEDS_AI_URL": "http:///v1"}, "BEDS_AI_URL must be an http:// or https:// URL"),
        ({"BEDS_AI_URL": f"https://u:{KEY}@h.test/v1"}, "BEDS_AI_URL must not hold credentials"),
        ({"BEDS_AI_URL": "https://h.test/v1#x"}, "must not have a #fragment"),
        ({"BEDS_AI_TIMEOUT": "soon"}, "BEDS_AI_TIMEOUT must be a number from 0.1 to 3600"),
        ({"BEDS_AI_TIMEOUT": "nan"}, "BEDS_AI_TIMEOUT must be a number"),
        ({"BEDS_AI_TIMEOUT": "0"}, "BEDS_AI_TIMEOUT must be a number"),
        ({"BEDS_AI_RETRIES": "9"}, "BEDS_AI_RETRIES must be a number from 0 to 5"),
        ({"BEDS_AI_RETRIES": "1.5"}, "BEDS_AI_RETRIES must be a whole number"),
        ({"BEDS_AI_MODEL": "m\n"}, None),  # surrounding space is stripped: valid
        ({"BEDS_AI_MODEL": "a\x00b"}, "BEDS_AI_MODEL must be a model name"),
        ({"BEDS_AI_KEY": f"{KEY}\r\nX-Evil: 1"}, "BEDS_AI_KEY holds a character a key cannot"),
        (
            {"BEDS_AI_KEY": KEY, "BEDS_AI_KEY_FILE": "/nonexistent"},
            "BEDS_AI_KEY and BEDS_AI_KEY_FILE are both set",
        ),
        ({"BEDS_AI_KEY_FILE": "/nonexistent/key"}, "BEDS_AI_KEY_FILE names a file that cannot"),
    ],
)
def test_bad_variables(extra: dict[str, str], message: str | None) -> None:
    if message is None:
        assert settings_from_env({**BASE, **extra}) is not None
        return
    with pytest.raises(ConfigError, match=message) as caught:
        settings_from_env({**BASE, **extra})
    assert KEY not in str(caught.value)
    assert caught.value.file is not None
    assert caught.value.file.startswith("environment variable BEDS_AI_")


def test_an_empty_key_file(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="BEDS_AI_KEY_FILE names an empty file"):
        settings_from_env({**BASE, "BEDS_AI_KEY_FILE": str(empty)})


_ENV = st.fixed_dictionaries(
    {},
    optional={
        **{
            name: st.text(max_size=40)
            for name in ("BEDS_AI_URL", "BEDS_AI_MODEL", "BEDS_AI_TIMEOUT", "BEDS_AI_RETRIES")
        },
        # A key no message could hold by chance: then any sign of it in a message is a leak.
        "BEDS_AI_KEY": st.text(max_size=20).map(lambda s: f"sk-Q{s}"),
        "BEDS_AI_KEY_FILE": st.sampled_from(["", "/nonexistent/key"]),
    },
)


@given(_ENV)
def test_any_environment_is_settings_none_or_a_config_error(environ: dict[str, str]) -> None:
    try:
        settings = settings_from_env(environ)
    except ConfigError as exc:
        error: ConfigError | None = exc
        settings = None
    else:
        error = None
    assert "sk-Q" not in str(error)
    if settings is not None:
        assert settings.completions_url.scheme in ("http", "https")
        assert settings.model.strip() == settings.model
        assert "sk-Q" not in repr(settings)
