"""The step's counts from the main query's profile, and the copy-free trim expression."""

# SQL text is generated here from fixed test strings.
# ruff: noqa: S608

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from dsjob import scancount
from dsjob.inference import clean_text
from dsjob.processing import (
    Counts,
    ProcessSettings,
    StepCounter,
    connect,
    count_rows,
    run_builtin,
    sniff_and_clean,
)

pytestmark = pytest.mark.unit

# Every Unicode space separator (Zs) DuckDB's trim strips, and characters it keeps.
_ZS = "\u0020\u00a0\u1680\u2000\u2005\u200a\u202f\u205f\u3000"
_KEPT = "\t\n\r\u200b\u2028\ufeff"
_VALUES = [
    None,
    "",
    " ",
    "   ",
    "a",
    " a",
    "a ",
    " a b ",
    "a  b",
    "Zoë",
    " Zoë ",
    "e\u0301",
    "twelve bytes",
    " longer than twelve bytes ",
    *(f"{c}x{c}" for c in _ZS),
    *(f"{c}x" for c in _ZS),
    *(f"x{c}" for c in _ZS),
    *(c for c in _ZS),
    *(f"{c}x{c}" for c in _KEPT),
    "\u00a0é\u00a0",
]


def test_clean_text_is_exactly_nullif_trim() -> None:
    """The guarded expression gives what NULLIF(trim(v), '') gives, value by value."""
    with duckdb.connect() as con:
        con.execute("CREATE TABLE t (i INTEGER, v VARCHAR)")
        con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(_VALUES)))
        got = con.execute(
            f"SELECT i, {clean_text('v')}, NULLIF(trim(v), '') FROM t ORDER BY i"
        ).fetchall()
    differ = [(_VALUES[i], mine, ref) for i, mine, ref in got if mine != ref]
    assert differ == []
    # The values exercise both branches: some are changed by trim, some are not.
    assert any(v is not None and v.strip(_ZS) != v for v in _VALUES)


MIXED = (
    "id,name,score\n"
    "1, Anna ,1.5\n"
    "2,Bram,2.5\n"
    "1, Anna ,1.5\n"  # duplicate
    ",Chloe,3.5\n"  # NULL id
    "3,Daan,4.5\n"
)
TEXT_IDS = (
    "id,name\n"
    " a1 ,x\n"
    "b2,y\n"
    "   ,z\n"  # blank id: NULL after trimming
    "\u00a0\u00a0,w\n"  # only Zs characters: NULL after trimming
    "b2,y\n"  # duplicate
)
RAGGED = "id,name\n1,a\n2,b,extra\n,c\n3,d\n"


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        (MIXED, "fail", Counts(rows_in=5, null_id=1, malformed=0)),
        (TEXT_IDS, "fail", Counts(rows_in=5, null_id=2, malformed=0)),
        (RAGGED, "skip", Counts(rows_in=4, null_id=1, malformed=1)),
    ],
    ids=["typed-id", "text-id", "skip-ragged"],
)
def test_profile_counts_equal_a_counting_scan(
    tmp_path: Path, text: str, mode: str, expected: Counts
) -> None:
    """The main query's profile gives the same counts as a separate counting scan."""
    src = tmp_path / "in.csv"
    src.write_text(text, encoding="utf-8")
    settings = ProcessSettings(on_bad_rows=mode)
    with connect(settings, tmp_path / "spill") as con:
        cleaned = sniff_and_clean(con, src, settings)
        scancount.enable(con)
        con.execute("DROP TABLE IF EXISTS reject_errors")
        con.execute(f"CREATE TEMP TABLE out AS SELECT DISTINCT * FROM ({cleaned.kept()})")
        counter = StepCounter(con)
        counter.scanned(con, cleaned)
        from_profile = counter()
        con.execute("DROP TABLE IF EXISTS reject_errors")
        scanned = count_rows(con.cursor(), cleaned)
    assert from_profile == expected
    assert scanned == expected


def test_the_step_reports_profile_counts(tmp_path: Path) -> None:
    """End to end: rows in, NULL ids, duplicates and malformed rows of a skip-mode run."""
    src = tmp_path / "in.csv"
    src.write_text(MIXED + "4,Emma,5.5,extra\n", encoding="utf-8")
    result = run_builtin(src, tmp_path / "out", ProcessSettings(on_bad_rows="skip"))
    assert (result.rows_in, result.rows_out) == (6, 3)
    assert result.dropped == {"null_id": 1, "duplicate": 1, "malformed": 1}


@pytest.mark.parametrize(
    "query",
    [
        # A second condition folded into the id filter would make null_id wrong.
        # (DuckDB folds it into the id filter's expression for a text id column.)
        "SELECT DISTINCT * FROM ({kept}) WHERE name IS NOT NULL",
        # ... or a second condition on the id column itself.
        "SELECT DISTINCT * FROM ({kept}) WHERE id <> 'zz'",
        # A filter on another column only (as if the id test had moved into the scan).
        "SELECT DISTINCT * FROM ({select}) WHERE name IS NOT NULL",
        # Two scans of the input: which one's rows are the input's?
        "SELECT * FROM ({kept}) UNION ALL SELECT * FROM ({kept})",
    ],
    ids=["extra-filter", "extra-id-condition", "other-column-filter", "two-scans"],
)
def test_other_plan_shapes_fall_back_to_a_counting_scan(tmp_path: Path, query: str) -> None:
    """A plan the profile reader does not recognise gives no counts; the counter scans instead."""
    src = tmp_path / "in.csv"
    src.write_text(TEXT_IDS + "c3,\n", encoding="utf-8")  # a NULL name, not a NULL id
    settings = ProcessSettings()
    with connect(settings, tmp_path / "spill") as con:
        cleaned = sniff_and_clean(con, src, settings)
        scancount.enable(con)
        con.execute(
            f"CREATE TEMP TABLE out AS {query.format(kept=cleaned.kept(), select=cleaned.select())}"
        )
        assert scancount.from_last_query(con, cleaned) is None
        counter = StepCounter(con)
        counter.scanned(con, cleaned)
        assert counter() == Counts(rows_in=6, null_id=2, malformed=0)


def test_without_profiling_there_are_no_profile_counts(tmp_path: Path) -> None:
    """Profiling off: nothing is read from a stale or empty profile."""
    src = tmp_path / "in.csv"
    src.write_text(MIXED, encoding="utf-8")
    settings = ProcessSettings()
    with connect(settings, tmp_path / "spill") as con:
        cleaned = sniff_and_clean(con, src, settings)
        con.execute(f"CREATE TEMP TABLE out AS SELECT DISTINCT * FROM ({cleaned.kept()})")
        assert scancount.from_last_query(con, cleaned) is None
