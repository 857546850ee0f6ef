"""Names a domain description may use: safe identifiers that no layer reserves.

A name in a description becomes a SQL column or object name, a MongoDB field, a Python import
name and a key in every request, so it must be safe in all of them at once: ``lower_snake_case``
ASCII, short enough that ``<tla>_<name>_<suffix>`` stays within MariaDB's 64 characters, and
none of MariaDB's reserved words (https://mariadb.com/kb/en/reserved-words/), Python's keywords
or the names BEDS gives a meaning to (fetch keys, the ``history`` query, the ``retention`` sweep,
the ``step``/``steps`` params of long operations).
"""

from __future__ import annotations

import keyword
import re

__all__ = (
    "BEDS_RESERVED",
    "MAX_NAME",
    "NAME",
    "SQL_RESERVED",
    "TLA",
    "name_problem",
)

MAX_NAME = 40
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
TLA = re.compile(r"^[a-z]{3}$")

# MariaDB's reserved words (10.11 and 11.x), lower-cased: a column named so needs quoting in
# every statement the DBA writes by hand, so the generator refuses them instead.
_SQL_WORDS = """
    accessible add all alter analyze and as asc asensitive before between bigint binary blob
    both by call cascade case change char character check collate column condition constraint
    continue convert create cross current_date current_role current_time current_timestamp
    current_user cursor database databases day_hour day_microsecond day_minute day_second dec
    decimal declare default delayed delete delete_domain_id desc describe deterministic distinct
    distinctrow div do_domain_ids double drop dual each else elseif enclosed escaped except
    exists exit explain false fetch float float4 float8 for force foreign from fulltext general
    grant group having high_priority hour_microsecond hour_minute hour_second if ignore
    ignore_domain_ids ignore_server_ids in index infile inner inout insensitive insert int int1
    int2 int3 int4 int8 integer intersect interval into is iterate join key keys kill leading
    leave left like limit linear lines load localtime localtimestamp lock long longblob longtext
    loop low_priority master_heartbeat_period master_ssl_verify_server_cert match maxvalue
    mediumblob mediumint mediumtext middleint minute_microsecond minute_second mod modifies
    natural not no_write_to_binlog null numeric offset on optimize option optionally or order
    out outer outfile over page_checksum parse_vcol_expr partition position precision primary
    procedure purge range read reads read_write real recursive ref_system_id references regexp
    release rename repeat replace require resignal restrict return returning revoke right rlike
    rows row_number schema schemas second_microsecond select sensitive separator set show signal
    slow smallint spatial specific sql sqlexception sqlstate sqlwarning sql_big_result
    sql_calc_found_rows sql_small_result ssl starting stats_auto_recalc stats_persistent
    stats_sample_pages straight_join table terminated then tinyblob tinyint tinytext to trailing
    trigger true undo union unique unlock unsigned update usage use using utc_date utc_time
    utc_timestamp values varbinary varchar varcharacter varying when where while window with
    write xor year_month zerofill
"""
SQL_RESERVED = frozenset(_SQL_WORDS.split())

# Names with a meaning in BEDS: fetch payload keys, envelope words, the reserved `history`
# query and `retention` sweep, long-operation step params, MongoDB's `_id` spelled as a field.
BEDS_RESERVED = frozenset(
    {
        "query",
        "params",
        "cursor",
        "consistency",
        "payload",
        "meta",
        "history",
        "retention",
        "step",
        "steps",
        "beds",
        "self",
        "cls",
        "none",
        "true",
        "false",
    }
)


def name_problem(name: object, *, max_length: int = MAX_NAME) -> str | None:
    """Why ``name`` cannot be used, or ``None`` when it is a safe, unreserved identifier."""
    if not isinstance(name, str):
        return "must be a string"
    if len(name) > max_length:
        return f"must be at most {max_length} characters"
    if not NAME.fullmatch(name):
        return (
            f"{name!r} is not a safe identifier: lower_snake_case ASCII (a-z, 0-9, _), "
            "starting with a letter"
        )
    if name.endswith("_") or "__" in name:
        return f"{name!r} is not a safe identifier: no trailing or doubled underscore"
    if name in SQL_RESERVED:
        return f"{name!r} is a MariaDB reserved word"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"{name!r} is a Python keyword"
    if name in BEDS_RESERVED:
        return f"{name!r} is reserved by BEDS"
    return None
