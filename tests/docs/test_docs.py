"""The documentation covers what the code defines: hooks, error codes, config keys, CLI commands.

Each test lists everything that is missing, so one run shows the whole gap (datasette's
``tests/test_docs.py`` does the same for its plugin hooks).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import attrs
import click
import pytest

from beds import hookspecs
from beds.cli import cli
from beds.config import Config
from beds.errors import error_catalogue

DOCS = Path(__file__).resolve().parents[2] / "docs"
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


@attrs.frozen
class Section:
    """A Markdown heading and the text below it, up to the next heading of the same level."""

    level: int
    title: str
    body: str


def _sections(page: str) -> list[Section]:
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    headings: list[tuple[int, int, str]] = []
    fence: str | None = None
    for number, line in enumerate(lines):
        opening = _FENCE.match(line)
        if opening is not None:
            marker = opening.group(1)
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
            continue
        heading = _HEADING.match(line)
        if fence is None and heading is not None:
            headings.append((number, len(heading.group(1)), heading.group(2)))
    sections = []
    for index, (start, level, title) in enumerate(headings):
        end = next((n for n, lvl, _ in headings[index + 1 :] if lvl <= level), len(lines))
        sections.append(Section(level, title, "\n".join(lines[start + 1 : end])))
    return sections


def _text(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


# -- hooks -----------------------------------------------------------------------------------


def _hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs) if name.startswith("beds_"))


def test_hookspecs_are_found() -> None:
    assert set(_hook_names()) == set(hookspecs.__all__)


def test_every_hook_has_a_heading_with_its_signature() -> None:
    sections = {s.title.strip("`"): s for s in _sections("hooks.md")}
    missing = [name for name in _hook_names() if name not in sections]
    assert not missing, f"docs/hooks.md has no heading for: {', '.join(missing)}"
    unsigned = [
        name
        for name in _hook_names()
        if f"autofunction:: beds.hookspecs.{name}" not in sections[name].body
    ]
    assert not unsigned, f"docs/hooks.md shows no autodoc signature for: {', '.join(unsigned)}"


def test_hooks_page_documents_no_unknown_hook() -> None:
    titles = [s.title.strip("`") for s in _sections("hooks.md")]
    unknown = [t for t in titles if t.startswith("beds_") and t not in _hook_names()]
    assert not unknown, f"docs/hooks.md documents hooks that do not exist: {', '.join(unknown)}"


# -- errors ----------------------------------------------------------------------------------


def test_every_error_code_is_in_the_catalogue_table() -> None:
    rows = {
        match.group(1): line
        for line in _text("errors.md").splitlines()
        if (match := re.match(r"^\|\s*`(BEDS-[0-9A-Z]+)`\s*\|", line))
    }
    missing = [code for code in error_catalogue() if code not in rows]
    assert not missing, f"docs/errors.md has no catalogue row for: {', '.join(missing)}"
    wrong = [
        f"{code} (expected {kind.__name__}, status {kind.STATUS})"
        for code, kind in error_catalogue().items()
        if not re.search(rf"\b{kind.__name__}\b", rows[code])
        or not re.search(rf"\|\s*{kind.STATUS}\s*\|", rows[code])
    ]
    assert not wrong, f"docs/errors.md rows with the wrong class or status: {', '.join(wrong)}"
    stale = sorted(set(rows) - set(error_catalogue()))
    assert not stale, f"docs/errors.md lists codes that do not exist: {', '.join(stale)}"


def test_every_error_class_is_in_the_tree() -> None:
    text = _text("errors.md")
    missing = [kind.__name__ for kind in error_catalogue().values() if kind.__name__ not in text]
    assert not missing, f"docs/errors.md does not name: {', '.join(missing)}"


# -- configuration ---------------------------------------------------------------------------


def _config_keys(kind: type[Any], prefix: str = "") -> list[str]:
    """Dotted key paths of an attrs config class; ``<role>``-style placeholders for tables."""
    keys: list[str] = []
    hints = typing.get_type_hints(kind)
    for field in attrs.fields(kind):
        path = f"{prefix}{field.name}"
        hint = hints[field.name]
        args = typing.get_args(hint)
        if attrs.has(hint):
            keys.append(f"[{path}]")
            keys += _config_keys(hint, f"{path}.")
        elif typing.get_origin(hint) is dict and attrs.has(args[1]):
            keys.append(f"`{path}`")
            keys += _config_keys(args[1], f"{path}.<{field.name.removesuffix('s')}>.")
        elif typing.get_origin(hint) is dict and path == "stores":
            keys.append(f"`{path}.<store>`")
        else:
            keys.append(f"`{path}`")
    return keys


def test_config_keys_are_walked() -> None:
    keys = _config_keys(Config)
    assert "`node.role`" in keys
    assert "`roles.<role>.brokers.<broker>.instances`" in keys
    assert "`stores.<store>`" in keys


def test_every_config_key_is_documented() -> None:
    text = _text("configuration.md")
    missing = [key for key in _config_keys(Config) if key not in text]
    assert not missing, f"docs/configuration.md does not document: {', '.join(missing)}"


def _store_keys(store: str) -> tuple[str, ...]:
    """The keys an adapter accepts in its ``[stores.<store>]`` table (its own list)."""
    if store == "rel":
        from beds_rel import settings as rel_settings

        return rel_settings._KEYS
    from beds_rec import settings as rec_settings

    return rec_settings._KEYS


@pytest.mark.parametrize("store", ["rel", "rec"])
def test_every_store_key_is_documented(store: str) -> None:
    section = next(s for s in _sections("configuration.md") if s.title == "`[stores.<store>]`")
    table = section.body.split(f"`[stores.{store}]`", 1)[1].split("\n\n`[stores.", 1)[0]
    missing = [key for key in _store_keys(store) if f"| `{key}` |" not in table]
    assert not missing, f"docs/configuration.md [stores.{store}] lacks: {', '.join(missing)}"


# -- CLI -------------------------------------------------------------------------------------


def _commands(group: click.Group, prefix: str = "beds") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, path)
    return found


def test_cli_commands_are_walked() -> None:
    paths = [path for path, _ in _commands(cli)]
    assert "beds run" in paths
    assert "beds schema apply" in paths


def test_every_cli_command_has_a_section_with_its_options() -> None:
    sections = {s.title.strip("`"): s for s in _sections("cli.md")}
    missing = [path for path, _ in _commands(cli) if path not in sections]
    assert not missing, f"docs/cli.md has no heading for: {', '.join(missing)}"
    undocumented = [
        f"{path} {option}"
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option)
        for option in param.opts
        if option not in sections[path].body
    ]
    assert not undocumented, f"docs/cli.md does not document: {', '.join(undocumented)}"


def test_cli_page_documents_no_unknown_command() -> None:
    known = {path for path, _ in _commands(cli)}
    titles = [s.title.strip("`") for s in _sections("cli.md")]
    unknown = [t for t in titles if t.startswith("beds ") and t not in known]
    assert not unknown, f"docs/cli.md documents commands that do not exist: {', '.join(unknown)}"


# -- examples in the pages -------------------------------------------------------------------


def _code_blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", _text(page), flags=re.MULTILINE | re.DOTALL)


def test_the_complete_config_example_loads(tmp_path: Path) -> None:
    import trustme

    from beds.config import load_config
    from beds.namaste import StoreSettings
    from beds.policy import findings
    from beds_rec.settings import parse_settings as parse_rec_settings
    from beds_rel.settings import parse_settings as parse_rel_settings

    *_, base, env_file = _code_blocks("configuration.md", "toml")
    ca = tmp_path / "ca.pem"  # the example's CA file, made real
    trustme.CA().cert_pem.write_to_path(str(ca))
    (tmp_path / "beds.toml").write_text(base.replace("/etc/beds/ca.pem", str(ca)), encoding="utf-8")
    (tmp_path / "env_prod.toml").write_text(env_file, encoding="utf-8")
    config = load_config(tmp_path / "beds.toml", environ={"BEDS_ENV": "prod"})
    assert config.files == (str(tmp_path / "beds.toml"), str(tmp_path / "env_prod.toml"))
    assert config.production
    assert findings(config) == []  # a production example the policy accepts
    parse_rel_settings(StoreSettings(store="rel", options=config.stores["rel"]))
    parse_rec_settings(StoreSettings(store="rec", options=config.stores["rec"]))
    assert load_config(tmp_path / "beds.toml", role="tercero", environ={}).brokers


def test_wire_contract_json_examples_are_valid_envelopes() -> None:
    from beds.codec import decode_request, decode_response

    blocks = _code_blocks("wire-contract.md", "json")
    requests = [b for b in blocks if '"operation"' in b]
    responses = [b for b in blocks if '"ok"' in b]
    assert len(requests) >= 3
    assert len(responses) >= 4
    for block in requests:
        decode_request(block.encode())
    for block in responses:
        decode_response(block.encode())


# -- pytest plugin, beds check samples, log lines --------------------------------------------


def test_every_pytest_plugin_fixture_is_documented() -> None:
    from beds.testing import pytest_plugin

    fixtures = sorted(
        name
        for name, value in vars(pytest_plugin).items()
        if name.startswith("beds_") and callable(value)
    )
    assert fixtures, "beds.testing.pytest_plugin defines no beds_* fixtures"
    text = _text("writing-a-domain.md")
    missing = [name for name in fixtures if f"`{name}`" not in text]
    assert not missing, f"docs/writing-a-domain.md does not name the fixtures: {missing}"
    assert "provides no fixtures" not in text


_CHECK_LINE = re.compile(r"^\[(ok  |WARN|FAIL)\] (?P<name>[a-z][^:]*?)(?:: (?P<detail>.*))?$")
_FIRST_CHECKS = ("config", "rabbitmq", "plugins")
"""The checks IPL always reports first, in this order (docs/architecture.md, "IPL")."""


def _check_samples() -> list[tuple[str, list[str]]]:
    """Every ``$ beds check`` transcript in the pages: (page, the lines it shows)."""
    samples = []
    for path in sorted(DOCS.glob("*.md")):
        for block in _code_blocks(path.name, "console"):
            lines = block.splitlines()
            for index, line in enumerate(lines):
                if line.startswith("$ beds check"):
                    shown = []
                    for below in lines[index + 1 :]:
                        if below.startswith("$ "):
                            break
                        shown.append(below)
                    samples.append((path.name, shown))
    return samples


def test_beds_check_samples_show_the_real_checklist() -> None:
    samples = _check_samples()
    assert len(samples) >= 4
    wrong = []
    for page, lines in samples:
        names = []
        for line in (line for line in lines if line.strip() and line != "…"):
            match = _CHECK_LINE.match(line)
            if match is None:
                wrong.append(f"{page}: not a check line: {line!r}")
                continue
            name, detail = match.group("name"), match.group("detail") or ""
            names.append(name)
            if name == "rabbitmq" and not re.fullmatch(r"amqps?://[^:]+:\*\*\*@\S+", detail):
                wrong.append(f"{page}: rabbitmq shows the URL, password masked: {line!r}")
            if name == "plugins" and not re.fullmatch(r"\d+ templates?", detail):
                wrong.append(f"{page}: plugins shows the number of templates: {line!r}")
        if lines and lines[0] != "…" and tuple(names[:3]) != _FIRST_CHECKS:
            wrong.append(f"{page}: a checklist starts with {_FIRST_CHECKS}, not {names[:3]}")
    assert not wrong, "\n".join(wrong)


def test_the_log_line_keys_are_documented() -> None:
    from beds.log import DIAGNOSE_VARIABLE, JSON_KEYS

    section = next(s for s in _sections("configuration.md") if s.title == "Log lines")
    missing = [key for key in JSON_KEYS if f"| `{key}` |" not in section.body]
    assert not missing, f"docs/configuration.md, Log lines, lacks the keys: {missing}"
    assert DIAGNOSE_VARIABLE in section.body
