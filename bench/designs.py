"""Dedup designs for the built-in step, measured side by side at the 512 MiB container's limit.

Each design takes the same cleaned input (``processing.sniff_and_clean``) and
writes ``data.parquet`` with the same content; only the dedup shape differs.
The chosen one (``fp-pqstage``) lives in :mod:`dsjob.dedup`; the others stay here
so the choice can be re-checked on other hardware.

* ``distinct`` -- one ``COPY (SELECT DISTINCT * ...)``: exact, but the hash table
  holds every distinct row, so under a small limit it spills the input once.
* ``fp-stage`` -- stage rows + a 64-bit fingerprint (``hash()`` in a wrapping
  SELECT over the cleaned values), keep fingerprints seen twice, DISTINCT only
  those rows, write the rest as they are.
* ``fp-reparse`` -- the same without the stage: one scan collects the repeated
  fingerprints (8 B/row in the hash table), a second scan writes.
* ``fp-pqstage`` -- ``fp-stage`` with the stage in an uncompressed Parquet file in
  the spill dir instead of a temp table: one parse, no spilled hash table of rows,
  but the rows are encoded twice (stage, then output) and the stage read twice.
* ``parse-only`` -- clean and write with the step's writer settings, no dedup: the
  ceiling for any design.
* ``distinct-zstd1`` -- ``distinct`` with the Parquet writer at zstd level 1 and
  the default row groups: the step's shape before the fingerprint stage.
* ``parse-native`` -- DuckDB's typed reader straight to Parquet, no cleaning.
* ``group-count`` -- one scan, ``GROUP BY ALL`` keeping each row's multiplicity
  in a temp table, so the counts need no second scan of the input.
* ``distinct-and-count`` -- ``distinct-zstd1`` plus a counting scan beside it on a
  second cursor (the step's shape before its counts came from the query profile).
"""

# SQL is generated from processing's quoting helpers, never raw user strings.
# ruff: noqa: S608, SLF001

from __future__ import annotations

from typing import TYPE_CHECKING

from dsjob import processing as proc

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import duckdb

PARQUET = "(FORMAT parquet, COMPRESSION zstd)"
#: The writer lever: zstd level 1 (DuckDB's default is 3). 1 M-row row groups ran out of
#: memory at the 312 MB limit (measured), so the row-group size stays the default.
PARQUET_FAST = "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"


def _copy_to(con: duckdb.DuckDBPyConnection, query: str, target: Path, options: str) -> int:
    quoted = proc._quote_str(str(target))
    return int(con.execute(f"COPY ({query}) TO {quoted} {options}").fetchall()[0][0])


def _copy(con: duckdb.DuckDBPyConnection, query: str, out: Path, options: str = PARQUET) -> int:
    return _copy_to(con, query, out / "data.parquet", options)


def fingerprint(columns: list[str]) -> str:
    """DuckDB's 64-bit ``hash()`` over the cleaned, typed values of ``columns``.

    It treats NULL, NaN and -0.0/+0.0 as DISTINCT does. It must be applied in a
    SELECT *wrapping* the cleaning one: next to ``trim(c) AS c`` it would hash raw ``c``.
    """
    return f"hash({', '.join(proc._quote_ident(c) for c in columns)})"


def deduplicated(
    con: duckdb.DuckDBPyConnection,
    cleaned: proc.Cleaned,
    fingerprint_of: Callable[[list[str]], str] = fingerprint,
    stage_file: Path | None = None,
) -> str:
    """Stage the kept rows with a fingerprint; returns a SELECT of them without duplicates.

    Exact whatever the hash: rows whose fingerprint is unique cannot have a
    duplicate, and rows sharing one (duplicates, and any collisions) go through
    a real DISTINCT. Only the stage and the repeated fingerprints are held, never
    a hash table of whole rows.

    Args:
        con: the step's connection.
        cleaned: what :func:`sniff_and_clean` returned.
        fingerprint_of: SQL of a row fingerprint over the given columns (tests
            inject a weak one to force collisions).
        stage_file: stage in this (uncompressed) Parquet file instead of a temp table.
    """
    fp = fingerprint_of(list(cleaned.types))
    hashed = f"SELECT *, {fp} AS dsjob_fp FROM ({cleaned.kept()})"
    if stage_file is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE dsjob_stage AS {hashed}")
        stage = "dsjob_stage"
    else:
        # Parquet types round-trip every type the cleaning produces, so DISTINCT over
        # the stage equals DISTINCT over the cleaned rows.
        stage = f"read_parquet({proc._quote_str(str(stage_file))})"
        _copy_to(con, hashed, stage_file, "(FORMAT parquet, COMPRESSION uncompressed)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE dsjob_twice AS "
        f"SELECT dsjob_fp FROM {stage} GROUP BY dsjob_fp HAVING count(*) > 1"
    )
    return (
        f"SELECT * EXCLUDE (dsjob_fp) FROM {stage} ANTI JOIN dsjob_twice USING (dsjob_fp) "
        f"UNION ALL SELECT DISTINCT * EXCLUDE (dsjob_fp) FROM {stage} "
        "SEMI JOIN dsjob_twice USING (dsjob_fp)"
    )


def _fp(cleaned: proc.Cleaned) -> str:
    return fingerprint(list(cleaned.types))


def distinct(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """Today's shape before the fingerprint: one exact DISTINCT."""
    return _copy(con, f"SELECT DISTINCT * FROM ({cleaned.kept()})", out)


def fp_stage(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """Stage + fingerprint, resolve repeated fingerprints exactly."""
    return _copy(con, deduplicated(con, cleaned), out)


def fp_pqstage(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """Stage + fingerprint in an uncompressed Parquet file, resolve repeated fingerprints."""
    stage = out / ".spill" / "stage.parquet"
    stage.parent.mkdir(parents=True, exist_ok=True)
    return _copy(con, deduplicated(con, cleaned, stage_file=stage), out, PARQUET_FAST)


def fp_reparse(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """Repeated fingerprints from a first scan; a second scan writes."""
    fp = _fp(cleaned)
    con.execute(
        f"CREATE TEMP TABLE twice AS SELECT fp FROM (SELECT {fp} AS fp FROM "
        f"({cleaned.kept()})) GROUP BY fp HAVING count(*) > 1"
    )
    hashed = f"SELECT *, {fp} AS fp FROM ({cleaned.kept()})"
    query = (
        f"SELECT * EXCLUDE (fp) FROM ({hashed}) ANTI JOIN twice USING (fp) UNION ALL "
        f"SELECT DISTINCT * EXCLUDE (fp) FROM ({hashed}) SEMI JOIN twice USING (fp)"
    )
    return _copy(con, query, out)


def parse_only(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """No dedup, the step's writer settings: the ceiling."""
    return _copy(con, cleaned.kept(), out, PARQUET_FAST)


def distinct_zstd1(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """The exact DISTINCT with the writer levers pulled."""
    return _copy(con, f"SELECT DISTINCT * FROM ({cleaned.kept()})", out, PARQUET_FAST)


def parse_native(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """DuckDB's own typed CSV reader straight into Parquet: no trim, no dedup (the floor)."""
    path = proc._quote_str(str(cleaned.path))
    return _copy(con, f"SELECT * FROM read_csv({path})", out)


def group_count(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """One scan: GROUP BY ALL with each row's multiplicity, so the counts need no second scan."""
    idc = proc._quote_ident(cleaned.id_column or "")
    con.execute(
        f"CREATE TEMP TABLE grouped AS SELECT *, count(*) AS dsjob_n FROM ({cleaned.select()}) "
        "GROUP BY ALL"
    )
    con.execute(f"SELECT sum(dsjob_n), sum(dsjob_n) FILTER (WHERE {idc} IS NULL) FROM grouped")
    query = f"SELECT * EXCLUDE (dsjob_n) FROM grouped WHERE {idc} IS NOT NULL"
    return _copy(con, query, out, PARQUET_FAST)


def distinct_and_count(con: duckdb.DuckDBPyConnection, cleaned: proc.Cleaned, out: Path) -> int:
    """The zstd-1 DISTINCT plus a counting scan on a second cursor (an earlier step shape)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(1) as pool:
        counting = pool.submit(proc.count_rows, con.cursor(), cleaned)
        rows = distinct_zstd1(con, cleaned, out)
        counting.result()
    return rows


DESIGNS = {
    "group-count": group_count,
    "distinct-and-count": distinct_and_count,
    "distinct-zstd1": distinct_zstd1,
    "parse-native": parse_native,
    "distinct": distinct,
    "fp-stage": fp_stage,
    "fp-reparse": fp_reparse,
    "fp-pqstage": fp_pqstage,
    "parse-only": parse_only,
}


def run(name: str, src: Path, out: Path, memory_limit: str | None) -> int:
    """Run one design on ``src`` with the step's connection settings."""
    settings = proc.ProcessSettings(memory_limit=memory_limit, temp_dir=out / ".spill")
    with proc.connect(settings, out / ".spill") as con:
        cleaned = proc.sniff_and_clean(con, src, settings)
        return DESIGNS[name](con, cleaned, out)
