"""The schema splitter follows the mysql client: DELIMITER lines, comments, quoted text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beds_rel.schema import Statement, split_statements


def texts(sql: str) -> list[str]:
    return [statement.text for statement in split_statements(sql)]


def test_plain_statements_split_on_semicolons() -> None:
    assert texts("SELECT 1;\nSELECT 2;\n") == ["SELECT 1", "SELECT 2"]


def test_last_statement_needs_no_delimiter() -> None:
    assert texts("SELECT 1;\nSELECT 2") == ["SELECT 1", "SELECT 2"]


def test_blank_and_comment_only_input_gives_nothing() -> None:
    assert texts("") == []
    assert texts("  \n-- only a comment\n# another\n/* and a block */\n;;\n") == []


def test_delimiter_lines_keep_procedure_bodies_whole() -> None:
    sql = (
        "CREATE TABLE t (a INT);\n"
        "DELIMITER $$\n"
        "CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND$$\n"
        "delimiter //\n"
        "CREATE FUNCTION f() RETURNS INT RETURN 1//\n"
        "DELIMITER ;\n"
        "DROP TABLE t;\n"
    )
    assert texts(sql) == [
        "CREATE TABLE t (a INT)",
        "CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND",
        "CREATE FUNCTION f() RETURNS INT RETURN 1",
        "DROP TABLE t",
    ]


def test_delimiter_line_ends_a_pending_statement_like_mysql() -> None:
    assert texts("SELECT 1\nDELIMITER $$\nSELECT 2$$") == ["SELECT 1", "SELECT 2"]


def test_delimiter_needs_an_argument() -> None:
    with pytest.raises(ValueError, match="line 2: DELIMITER needs a delimiter"):
        split_statements("SELECT 1;\nDELIMITER\nSELECT 2;")


def test_a_word_starting_with_delimiter_is_not_a_command() -> None:
    sql = "CREATE TABLE t (\ndelimiter_col INT,\n  delimiter2 INT\n);"
    assert texts(sql) == ["CREATE TABLE t (\ndelimiter_col INT,\n  delimiter2 INT\n)"]


def test_delimiters_inside_quotes_are_text() -> None:
    sql = (
        "INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`);\n"
        "SELECT 'it''s; fine', 'back\\'slash;';\n"
        "SELECT '\nDELIMITER $$\n';"
    )
    assert texts(sql) == [
        "INSERT INTO t VALUES ('a;b', \"c;d\", `e;f`)",
        "SELECT 'it''s; fine', 'back\\'slash;'",
        "SELECT '\nDELIMITER $$\n'",
    ]


def test_comments_are_dropped_but_executable_comments_kept() -> None:
    sql = (
        "SELECT 1 -- trailing; comment\n"
        ", 2 # hash; comment\n"
        ", 3 /* block; comment */ , 4;\n"
        "SELECT 5--6;\n"
        "SELECT /*!40101 7; */ 8;\n"
        "SELECT /*M!100000 9 */ 10;"
    )
    assert texts(sql) == [
        "SELECT 1 \n, 2 \n, 3   , 4",
        "SELECT 5--6",
        "SELECT /*!40101 7; */ 8",
        "SELECT /*M!100000 9 */ 10",
    ]


def test_statements_know_their_first_line() -> None:
    sql = "-- header\n\nSELECT 1;\n/* two\nlines */ SELECT\n 2;\nDELIMITER $$\n\nSELECT 3$$"
    assert split_statements(sql) == [
        Statement("SELECT 1", 3),
        Statement("SELECT\n 2", 5),
        Statement("SELECT 3", 9),
    ]


# --- properties ---------------------------------------------------------------------------------

_words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda w: w.lower() != "delimiter"
)
_punctuation = st.sampled_from(["(", ")", ",", "=", "+", "*", "<", ">", "."])
_any_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


def _quoted(quote: str) -> st.SearchStrategy[str]:
    if quote == "`":
        return _any_text.map(lambda s: "`" + s.replace("`", "``") + "`")
    return _any_text.map(
        lambda s: quote + s.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote
    )


_code = st.one_of(
    _words, st.integers(0, 10**6).map(str), _punctuation, *(_quoted(q) for q in "'\"`")
)
_comment_text = _any_text.filter(lambda s: "\n" not in s and "*/" not in s).filter(
    lambda s: not s.startswith(("!", "M!"))
)
_comment = st.one_of(
    _comment_text.map(lambda s: f"/*{s}*/"),
    _comment_text.map(lambda s: f"-- {s}\n"),
    _comment_text.map(lambda s: f"#{s}\n"),
)
_token = st.one_of(_code.map(lambda t: (t, True)), _comment.map(lambda t: (t, False)))


def _normal(text: str) -> str:
    return " ".join(text.split())


@given(
    statements=st.lists(st.lists(_token, min_size=1, max_size=8), max_size=6),
    delimiter=st.sampled_from([";", "$$", "//", ";;"]),
)
def test_splitting_keeps_every_non_comment_token(
    statements: list[list[tuple[str, bool]]], delimiter: str
) -> None:
    body = "".join(" ".join(t for t, _ in tokens) + f" {delimiter}\n" for tokens in statements)
    sql = body if delimiter == ";" else f"DELIMITER {delimiter}\n{body}DELIMITER ;\n"
    expected = [" ".join(t for t, code in tokens if code) for tokens in statements]
    assert [_normal(s) for s in texts(sql)] == [_normal(e) for e in expected if _normal(e)]


@given(st.text(alphabet="abc xyz123(),=;\n\t", max_size=80))
def test_plain_text_loses_nothing_but_delimiters(sql: str) -> None:
    expected = [_normal(piece) for piece in sql.split(";") if piece.strip()]
    assert [_normal(s) for s in texts(sql)] == expected
