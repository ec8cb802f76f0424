"""Tests for the step's fingerprint-staged dedup (dsjob.dedup): exact whatever the hash."""

# SQL here reads files the tests wrote, never user strings.
# ruff: noqa: S608

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from dsjob.dedup import dedup_and_write
from dsjob.processing import ProcessSettings, connect, run_builtin, sniff_and_clean
from dsjob.sample import write_members_csv

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.unit


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def parquet_rows(path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        return con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()


@pytest.mark.parametrize(
    "weak",
    [lambda _: "0", lambda cols: f'length(CAST("{cols[1]}" AS VARCHAR)) % 3'],
    ids=["every-row-collides", "some-rows-collide"],
)
def test_staged_dedup_is_exact_under_forced_collisions(
    tmp_path: Path, weak: Callable[[list[str]], str]
) -> None:
    """With a fingerprint that collides on purpose, the step writes exactly DISTINCT's rows."""
    src = tmp_path / "members.csv"
    write_members_csv(src, 3_000)
    settings = ProcessSettings()
    with connect(settings, tmp_path / "spill") as con:
        cleaned = sniff_and_clean(con, src, settings)
        exact = con.execute(f"SELECT DISTINCT * FROM ({cleaned.kept()})").fetchall()
        written = dedup_and_write(con, cleaned, tmp_path / "out", settings, fingerprint_of=weak)
    got = parquet_rows(written.files[0])
    assert 0 < len(exact) < 3_000  # the sample holds duplicates and NULL ids
    assert written.rows_out == written.deduped == len(exact)
    assert sorted(got, key=repr) == sorted(exact, key=repr)


def test_rows_equal_after_cleaning_are_duplicates(tmp_path: Path) -> None:
    """Rows that differ only in padding are one row: the fingerprint hashes the cleaned values."""
    src = write(tmp_path / "in.csv", "id,name,score\n1,Ann,2.5\n 1 ,  Ann  , 2.50 \n2,Bob,1\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    got = sorted(parquet_rows(result.files[0]))
    assert got == [(1, "Ann", 2.5), (2, "Bob", 1.0)]
    assert result.dropped["duplicate"] == 1


def test_values_distinct_treats_as_equal_are_duplicates(tmp_path: Path) -> None:
    """-0.0 and 0.0, two NaN spellings and two NULLs are duplicates, as DISTINCT says."""
    src = write(tmp_path / "in.csv", "id,score\n1,0.0\n1,-0.0\n2,nan\n2,NaN\n3,\n3,\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    ids = sorted(row[0] for row in parquet_rows(result.files[0]))
    assert result.columns["score"] == "DOUBLE"
    assert ids == [1, 2, 3]
    assert result.dropped["duplicate"] == 3


def test_the_stage_is_removed_after_the_run(tmp_path: Path) -> None:
    """The fingerprint stage lives in the spill dir only while the step runs."""
    src = tmp_path / "members.csv"
    write_members_csv(src, 500)
    spill = tmp_path / "spill"
    result = run_builtin(src, tmp_path / "out", ProcessSettings(temp_dir=spill))
    assert result.rows_out > 0
    assert list(spill.glob("dsjob-stage-*")) == []


def test_parquet_types_survive_the_stage(tmp_path: Path) -> None:
    """A Parquet input with DECIMAL and nested columns is deduplicated exactly, types kept."""
    src = tmp_path / "in.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT * FROM (VALUES (1, 1.50::DECIMAL(9,2), [1, 2]), "
            "(1, 1.50::DECIMAL(9,2), [1, 2]), (2, 2.25::DECIMAL(9,2), [3])) t(id, amount, tags)) "
            f"TO '{src}' (FORMAT parquet)"
        )
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert result.columns == {"id": "INTEGER", "amount": "DECIMAL(9,2)", "tags": "INTEGER[]"}
    assert result.rows_out == 2
    assert result.dropped["duplicate"] == 1


def test_an_input_column_named_like_the_fingerprint(tmp_path: Path) -> None:
    """An input column called dsjob_fp is data like any other: kept, and part of the dedup."""
    src = write(tmp_path / "in.csv", "id,dsjob_fp\n1,a\n1,a\n1,b\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert sorted(parquet_rows(result.files[0])) == [(1, "a"), (1, "b")]
    assert list(result.columns) == ["id", "dsjob_fp"]
