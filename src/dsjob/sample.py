"""Seeded generator of member-like CSV data for demos, tests and benchmarks.

The rows look like the data the team processes: ids, names, emails, cities,
categories, floats with blanks, decimals, timestamps, yes/no flags, quoted
free text with commas, a few exact duplicate rows, a few NULL ids and some
whitespace padding -- everything the built-in step has to clean.

Generation runs inside DuckDB (already a runtime dependency): every value is a
pure function of ``(row number, seed)`` through ``hash()``, so output is
reproducible for a given seed and DuckDB version, and 10 M rows (~1.5 GB) take
seconds rather than minutes of Python string formatting.
"""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

LOGGER = logging.getLogger(__name__)

#: Fraction-per-mille knobs; documented so tests and benchmarks can predict counts roughly.
DUPLICATE_PER_MILLE = 20
NULL_ID_PER_MILLE = 5

_FIRST = [
    "Anna", "Bram", "Chloe", "Daan", "Emma", "Finn", "Greta", "Hugo", "Iris", "Jesse",
    "Julia", "Lars", "Lotte", "Milan", "Noor", "Olivier", "Sara", "Thijs", "Yara", "Zoë",
]  # fmt: skip
_LAST = [
    "de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen",
    "Visser", "Smit", "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters",
]  # fmt: skip
_CITIES = [
    "Amsterdam", "Rotterdam", "Den Haag", "Utrecht", "Eindhoven", "Groningen", "Tilburg",
    "Almere", "Breda", "Nijmegen", "Apeldoorn", "Haarlem", "Arnhem", "Enschede", "'s-Hertogenbosch",
]  # fmt: skip
_CATEGORIES = ["bronze", "silver", "gold", "platinum", "student", "family"]
_NOTES = [
    "called about billing, asked for invoice",
    "prefers email, not phone",
    "moved house; new address pending",
    'said "great service", wants newsletter',
    "VIP, handle with care",
    "complaint resolved, refund issued",
    "",
    "",
    "",
]


def _sql_list(values: list[str]) -> str:
    """A DuckDB list literal of string constants."""
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _query(rows: int, seed: int) -> str:
    """The SELECT that produces ``rows`` member rows for ``seed``."""
    # r(k) is a deterministic pseudo-random UBIGINT per source row and purpose k.
    r = "hash(src, {seed}, '{k}')"

    def pick(values: list[str], k: str) -> str:
        return f"{_sql_list(values)}[1 + ({r.format(seed=seed, k=k)} % {len(values)})::INT]"

    def rnd(k: str) -> str:
        return r.format(seed=seed, k=k)

    # Duplicates: row i re-emits an earlier source row, so all its columns repeat exactly.
    return f"""
    WITH base AS (
        SELECT i,
               CASE WHEN i > 10 AND hash(i, {seed}, 'dup') % 1000 < {DUPLICATE_PER_MILLE}
                    THEN i - 1 - (hash(i, {seed}, 'back') % least(i - 1, 1000))::BIGINT
                    ELSE i END AS src
        FROM range(1, {rows} + 1) t(i)
    ), cols AS (
        SELECT i, src,
               {pick(_FIRST, "first")} AS first_name,
               {pick(_LAST, "last")} AS last_name,
               {pick(_CITIES, "city")} AS city,
               {pick(_CATEGORIES, "cat")} AS category,
               {pick(_NOTES, "note")} AS note
        FROM base
    )
    SELECT
        CASE WHEN {rnd("nullid")} % 1000 < {NULL_ID_PER_MILLE} THEN NULL
             ELSE src + 100000 END AS id,
        CASE WHEN {rnd("pad")} % 10 = 0 THEN '  ' || first_name || ' ' ELSE first_name END
            AS first_name,
        last_name,
        lower(replace(first_name, 'ë', 'e')) || '.' || lower(replace(last_name, ' ', ''))
            || (src % 997)::VARCHAR || '@example.com' AS email,
        CASE WHEN {rnd("cpad")} % 20 = 0 THEN city || '   ' ELSE city END AS city,
        printf('%04d %s', 1000 + {rnd("pc")} % 9000,
               chr(65 + ({rnd("pl")} % 26)::INT) || chr(65 + ({rnd("pm")} % 26)::INT))
            AS postcode,
        '+31 6 ' || lpad(({rnd("ph")} % 100000000)::VARCHAR, 8, '0') AS phone,
        category,
        CASE WHEN {rnd("blank")} % 20 = 0 THEN NULL
             ELSE round(({rnd("score")} % 1000000) / 10000.0, 4)::DOUBLE END AS score,
        (({rnd("bal")} % 10000000)::DECIMAL(18, 2) / 100 - 20000)::DECIMAL(12, 2) AS balance,
        strftime(TIMESTAMP '2015-01-01' + to_seconds(({rnd("ts")} % 315360000)::BIGINT),
                 '%Y-%m-%d %H:%M:%S') AS joined_at,
        CASE WHEN {rnd("yes")} % 3 = 0 THEN 'no' ELSE 'yes' END AS active,
        (18 + {rnd("age")} % 70)::INT AS age,
        CASE WHEN note = '' THEN NULL ELSE note END AS notes
    FROM cols
    ORDER BY i
    """


def write_members_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` member-like rows (plus a header) to ``path`` as CSV.

    Args:
        path: destination file; its parent directory must exist.
        rows: number of data rows (duplicates and NULL-id rows included).
        seed: same seed, same file (for a given DuckDB version).
    """
    import duckdb  # noqa: PLC0415 -- lazy: keeps `dsjob --help` fast

    if rows < 0:
        raise ValueError("rows must be >= 0")
    con = duckdb.connect()
    try:
        # Inside a Jupyter kernel without ipywidgets, DuckDB refuses progress-bar
        # settings altogether; the bar is off there anyway.
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
        target = str(path).replace("'", "''")
        con.execute(
            f"COPY ({_query(rows, seed)}) TO '{target}' (FORMAT csv, HEADER true, QUOTE '\"')"
        )
    finally:
        con.close()
    LOGGER.info("wrote sample data", extra={"path": str(path), "rows": rows, "seed": seed})
