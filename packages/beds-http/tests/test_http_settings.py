"""``[http]``: defaults, key-path errors, and the config loader keeping the table for the edge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from beds.config import load_config
from beds.errors import ConfigError
from beds_http.settings import KEYS, HttpSettings, bundled_static_dir, parse_settings


def test_defaults() -> None:
    settings = parse_settings(None)
    assert settings == HttpSettings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)
    assert settings.cors_origins == ()
    assert settings.static_path == bundled_static_dir()
    assert (bundled_static_dir() / "index.html").is_file()


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"prot": 80}, "http.prot", "unknown key"),
        ({"port": 70000}, "http.port", "[0:65535]"),
        ({"port": "80"}, "http.port", "integer"),
        ({"workers": 0}, "http.workers", "[1:256]"),
        ({"max_body_bytes": True}, "http.max_body_bytes", "integer"),
        ({"request_timeout": 0}, "http.request_timeout", "greater than 0"),
        ({"host": ""}, "http.host", "empty"),
        ({"cors_origins": "https://a.example"}, "http.cors_origins", "list"),
        ({"cors_origins": ["*"]}, "http.cors_origins[0]", "origin"),
        ({"cors_origins": ["https://a.example/path"]}, "http.cors_origins[0]", "origin"),
        ({"public_url": "ftp://x"}, "http.public_url", "http"),
        ({"static_dir": "/no/such/folder"}, "http.static_dir", "not a folder"),
    ],
)
def test_bad_values_name_their_key(table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(table)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_origins_are_normalised(tmp_path: Path) -> None:
    settings = parse_settings(
        {
            "cors_origins": ["https://App.example", "http://127.0.0.1:5173/"],
            "public_url": "https://spew.example/",
            "static_dir": str(tmp_path),
        }
    )
    assert settings.cors_origins == ("https://app.example", "http://127.0.0.1:5173")
    assert settings.public_url == "https://spew.example"
    assert settings.static_path == tmp_path


def test_the_loader_keeps_the_table_and_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "beds.toml"
    path.write_text("schema_version = 1\n[http]\nport = 9090\nportt = 1\n", encoding="utf-8")
    config = load_config(path, environ={"BEDS__HTTP__WORKERS": "3"})
    assert config.http == {"port": 9090, "portt": 1, "workers": 3}
    with pytest.raises(ConfigError) as caught:
        parse_settings(config.http, config)
    assert caught.value.key == "http.portt"
    assert caught.value.file == str(path)


def test_every_key_is_documented() -> None:
    page = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
    text = page.read_text(encoding="utf-8")
    section = text.split("### `[http]`", 1)[1].split("\n### ", 1)[0]
    missing = [key for key in KEYS if f"| `http.{key}` |" not in section]
    assert not missing, f"docs/configuration.md [http] lacks: {', '.join(missing)}"
