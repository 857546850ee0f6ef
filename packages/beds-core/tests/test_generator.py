"""The domain generator (``beds new-domain``): descriptions in, template packages out.

Bad descriptions fail with the key path and write nothing; good ones give byte-identical
packages whose templates the template loader accepts; a changed description gives a diff and
the next numbered migration, never an edited one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from beds.cli import cli
from beds.generator import DescriptionError, description_schema, parse_description
from beds.generator.description import FIELD_TYPES, LIMITS, check_installed
from beds.generator.diff import plan, write
from beds.generator.package import LOCK_FILE, generate
from beds.templates import parse_template

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples" / "domains").glob("*.toml"))


def _minimal(**entity: Any) -> dict[str, Any]:
    """A valid description as data; ``entity`` overrides keys of its one entity."""
    book: dict[str, Any] = {
        "store": "rel",
        "tla": "lbk",
        "fields": {"title": {"type": "str", "max_length": 200}},
        "queries": {"by_title": {"by": ["title"]}},
    }
    fields = {**book["fields"], **entity.pop("fields", {})}
    book.update(entity, fields=fields)
    return {"domain": {"name": "library"}, "entities": {"book": book}}


def _error(data: dict[str, Any]) -> DescriptionError:
    with pytest.raises(DescriptionError) as caught:
        parse_description(data, source="d.toml")
    return caught.value


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_generates_templates_the_loader_accepts(path: Path) -> None:
    domain = parse_description(path.read_text(encoding="utf-8"), source=str(path))
    files = generate(domain)
    templates = [p for p in files if "/templates/" in p]
    assert len(templates) == len(domain.entities)
    for name in templates:
        template = parse_template(files[name].decode(), source=name)
        assert template.name == Path(name).stem
    assert generate(domain) == files  # deterministic: the same bytes every time


def test_the_minimal_example_is_about_fifteen_lines() -> None:
    text = (ROOT / "examples" / "domains" / "minimal.toml").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) <= 16


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"fields": {"title": {"type": "text"}}}, "entities.book.fields.title.type", "must be one"),
        ({"fields": {"select": {"type": "str"}}}, "entities.book.fields.select", "reserved word"),
        ({"fields": {"class": {"type": "int"}}}, "entities.book.fields.class", "Python keyword"),
        ({"fields": {"history": {"type": "int"}}}, "entities.book.fields.history", "by BEDS"),
        (
            {"fields": {"x; DROP TABLE t": {"type": "int"}}},
            "entities.book.fields.x; DROP TABLE t",
            "not a safe identifier",
        ),
        ({"fields": {"id": {"type": "int"}}}, "entities.book.fields.id", "added by the generator"),
        (
            {"fields": {"n": {"type": "int", "minimum": 5, "maximum": 1}}},
            "entities.book.fields.n.minimum",
            "is more than maximum",
        ),
        (
            {"fields": {"s": {"type": "str", "min_length": 9, "max_length": 3}}},
            "entities.book.fields.s.min_length",
            "is more than max_length",
        ),
        (
            {"fields": {"s": {"type": "str", "pattern": "[a-z]{40}"}}},
            "entities.book.fields.s.example",
            "is required",
        ),
        (
            {"fields": {"s": {"type": "str", "max_length": 5, "example": "too long"}}},
            "entities.book.fields.s.example",
            "at most 5 characters",
        ),
        (
            {"fields": {"s": {"type": "str", "required": False}}},
            "entities.book.fields.s.required",
            "nullable",
        ),
        (
            {"fields": {"owner": {"type": "int", "references": "author"}}},
            "entities.book.fields.owner.references",
            "not an entity",
        ),
        ({"capabilities": {"locking": True}}, "entities.book.capabilities.locking", "version"),
        ({"tla": "LBK"}, "entities.book.tla", "three lower-case letters"),
        ({"store": "sql"}, "entities.book.store", "must be one of rel, rec"),
        ({"queries": {"q": {"by": ["nope"]}}}, "entities.book.queries.q.by[0]", "not a field"),
        (
            {"fields": {"body": {"type": "str"}}, "queries": {"q": {"by": ["body"]}}},
            "entities.book.queries.q.by[0]",
            "max_length",
        ),
        ({"queries": {"by_key": {}}}, "entities.book.queries.by_key", "key query"),
        ({"colour": "red"}, "entities.book.colour", "is not a key here"),
        ({"access": {"fetch": ["Not A Role"]}}, "entities.book.access.fetch[0]", "role name"),
        ({"key": ["missing"]}, "entities.book.key[0]", "not a declared field"),
        ({"key": ["title"]}, "entities.book.operations", "no field can change"),
    ],
)
def test_a_bad_description_names_the_key(change: dict[str, Any], key: str, message: str) -> None:
    error = _error(_minimal(**change))
    assert error.key == key
    assert error.file == "d.toml"
    assert message in str(error)


def test_hostile_sizes_are_refused_by_the_same_validation() -> None:
    fields = {f"f{i}": {"type": "int"} for i in range(10_000)}
    assert _error(_minimal(fields=fields)).key == "entities.book.fields"
    long_name = {"a" * 41: {"type": "int"}}
    assert "at most 40" in str(_error(_minimal(fields=long_name)))
    text = "[domain]\nname = 'x'\n# " + "x" * LIMITS["bytes"]
    with pytest.raises(DescriptionError, match="larger than"):
        parse_description(text)
    with pytest.raises(DescriptionError, match="not valid TOML"):
        parse_description("[domain\nname=")


def test_tlas_clash_within_the_description_and_with_installed_packages() -> None:
    data = _minimal()
    data["entities"]["loan"] = {"store": "rel", "tla": "lbk", "fields": {"n": {"type": "int"}}}
    error = _error(data)
    assert error.key == "entities.loan.tla"
    assert "also the TLA of 'book'" in str(error)

    domain = parse_description(_minimal())
    with pytest.raises(DescriptionError) as caught:
        check_installed(domain, [("spew_post", "lbk", "beds-templates-example")])
    assert caught.value.key == "entities.book.tla"
    assert "beds-templates-example" in str(caught.value)
    # The package's own installed copy is not a clash (regenerating an installed package).
    check_installed(domain, [("library_book", "lbk", "beds-library")])


def test_the_json_schema_lists_the_keys_the_parser_reads() -> None:
    schema = description_schema()
    entity = schema["properties"]["entities"]["additionalProperties"]
    field = entity["properties"]["fields"]["additionalProperties"]
    assert field["properties"]["type"]["enum"] == list(FIELD_TYPES)
    examples = [tomllib.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES]
    for data in examples:
        for table in data["entities"].values():
            assert set(table) <= set(entity["properties"])
            for spec in table["fields"].values():
                assert set(spec) <= set(field["properties"])
    # Every key the schema allows is one the parser reads: a key it refuses would be a lie.
    for key in field["properties"]:
        one: dict[str, Any] = {"type": "str", "max_length": 5}
        one[key] = {"type": "str"}.get(key, one.get(key, True))
        problem = ""
        try:
            parse_description(_minimal(fields={"s": one}))
        except DescriptionError as exc:
            problem = str(exc)
        assert "is not a key here" not in problem, key
    assert orjson.loads(orjson.dumps(schema)) == schema  # JSON all the way down


def test_the_generated_sql_follows_the_rel_conventions() -> None:
    text = (ROOT / "examples" / "domains" / "library.toml").read_text(encoding="utf-8")
    files = generate(parse_description(text))
    sql = files["src/beds_library/schema/rel/001_book.sql"].decode()
    assert "CREATE TABLE IF NOT EXISTS lbk_book" in sql
    assert "CREATE OR REPLACE VIEW lbk_book_v" in sql
    assert "WHERE id = p_id AND version = p_version" in sql
    assert "SIGNAL SQLSTATE '45409'" in sql
    statements = [line for line in sql.splitlines() if not line.startswith("--")]
    assert not [line for line in statements if "COMMIT" in line]
    # Write procedures take the template's params in the template's order.
    template = tomllib.loads(files["src/beds_library/templates/library_book.toml"].decode())
    create = re.search(r"PROCEDURE lbk_create\((.*?)\)\nMODIFIES", sql, re.S)
    assert create is not None
    names = re.findall(r"IN p_(\w+)", create.group(1))
    assert names == template["operations"]["create"]["params"]


def test_cli_writes_a_package_then_refuses_to_overwrite_without_write(tmp_path: Path) -> None:
    description = tmp_path / "library.toml"
    description.write_text(_toml(), "utf-8")
    out = tmp_path / "pkg"
    runner = CliRunner()
    first = runner.invoke(
        cli, ["new-domain", "library", "--from", str(description), "--out", str(out)]
    )
    assert first.exit_code == 0, first.output
    assert (out / LOCK_FILE).is_file()
    same = runner.invoke(
        cli, ["new-domain", "library", "--from", str(description), "--out", str(out)]
    )
    assert same.exit_code == 0
    assert "up to date" in same.output

    description.write_text(_toml().replace("max_length = 200", "max_length = 250"), "utf-8")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    check = runner.invoke(
        cli, ["new-domain", "library", "--from", str(description), "--out", str(out), "--check"]
    )
    assert check.exit_code == 1
    refused = runner.invoke(
        cli, ["new-domain", "library", "--from", str(description), "--out", str(out)]
    )
    assert refused.exit_code == 1
    assert "+++ b/src/beds_library/schema/rel/002_changes.sql" in refused.output
    assert "ALTER TABLE lbk_book MODIFY COLUMN title VARCHAR(250) NOT NULL;" in refused.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    written = runner.invoke(
        cli, ["new-domain", "library", "--from", str(description), "--out", str(out), "--write"]
    )
    assert written.exit_code == 0, written.output
    # The shipped migration is untouched; the change is the next number.
    assert (out / "src/beds_library/schema/rel/001_book.sql").read_bytes() == before[
        out / "src/beds_library/schema/rel/001_book.sql"
    ]
    assert (out / "src/beds_library/schema/rel/002_changes.sql").is_file()
    lock = orjson.loads((out / LOCK_FILE).read_bytes())
    assert lock["schema"]["rel"] == ["001_book.sql", "002_changes.sql"]


def _toml() -> str:
    return """[domain]
name = "library"
[entities.book]
store = "rel"
tla = "lbk"
[entities.book.fields.title]
type = "str"
max_length = 200
[entities.book.queries.by_title]
by = ["title"]
"""


def test_a_bad_description_writes_nothing(tmp_path: Path) -> None:
    description = tmp_path / "d.toml"
    description.write_text(_toml().replace('type = "str"', 'type = "varchar"'), "utf-8")
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        cli, ["new-domain", "library", "--from", str(description), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "entities.book.fields.title.type" in result.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [description]


def test_a_key_change_is_refused_rather_than_migrated(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    write(plan(parse_description(_toml()), out))
    changed = _toml().replace('tla = "lbk"', 'tla = "lbx"')
    with pytest.raises(DescriptionError) as caught:
        plan(parse_description(changed), out)
    assert caught.value.key == "entities.book.tla"


def test_a_removed_entity_keeps_its_table_and_drops_its_routines(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    two = (
        _toml()
        + '[entities.loan]\nstore = "rel"\ntla = "lln"\n[entities.loan.fields.n]\ntype = "int"\n'
    )
    write(plan(parse_description(two), out))
    assert (out / "src/beds_library/templates/library_loan.toml").is_file()
    result = plan(parse_description(_toml()), out)
    sql = result.files["src/beds_library/schema/rel/003_changes.sql"].decode()
    assert "-- DROP TABLE IF EXISTS lln_loan;" in sql
    assert "DROP PROCEDURE IF EXISTS lln_create;" in sql
    assert "DROP VIEW IF EXISTS lln_loan_v;" in sql
    assert "src/beds_library/templates/library_loan.toml" in result.removed
    write(result)
    assert not (out / "src/beds_library/templates/library_loan.toml").exists()


@pytest.mark.parametrize("example", ["library", "notes"])
def test_the_generated_docs_in_the_site_are_up_to_date(example: str) -> None:
    """docs/generated/<example>/ is what the generator writes today (regenerate: see below)."""
    text = (ROOT / "examples" / "domains" / f"{example}.toml").read_text(encoding="utf-8")
    files = generate(parse_description(text))
    wanted = {p.removeprefix("docs/"): b for p, b in files.items() if p.startswith("docs/")}
    folder = ROOT / "docs" / "generated" / example
    found = {p.name: p.read_bytes() for p in folder.glob("*.md")}
    # To refresh: beds new-domain NAME --from examples/domains/NAME.toml --out /tmp/x, then
    # copy /tmp/x/docs/*.md to docs/generated/NAME/.
    assert found == wanted


def test_interactive_asks_for_a_description(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    answers = "book\nrel\nlbk\ntitle\nstr\n200\n\ny\n"
    result = CliRunner().invoke(
        cli, ["new-domain", "library", "--interactive", "--out", str(out)], input=answers
    )
    assert result.exit_code == 0, result.output
    template = tomllib.loads((out / "src/beds_library/templates/library_book.toml").read_text())
    assert template["fields"]["title"] == {"type": "str", "max_length": 200}
    assert template["queries"]["by_title"]["params"] == ["title"]


def test_interactive_answers_are_checked_like_a_file(tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    answers = "book\nrel\nBAD\n\n"
    result = CliRunner().invoke(
        cli, ["new-domain", "library", "--interactive", "--out", str(out)], input=answers
    )
    assert result.exit_code == 2
    assert "entities.book.tla" in result.output
    assert not out.exists()
