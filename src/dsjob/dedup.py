"""Phase 3 of the built-in step: deduplicate, run the transform, write the output files.

Without a transform, exact dedup goes through a fingerprint stage instead of one
``SELECT DISTINCT`` over every row (whose hash table holds each distinct row and,
under a container's memory limit, spills the input's worth of rows):

1. one scan cleans the input and writes the kept rows plus a 64-bit fingerprint of
   their cleaned values to an uncompressed Parquet file in the spill dir;
2. the fingerprints seen more than once (duplicates, and any collisions: ~2 % of
   rows in the sample data) go into a small temp table;
3. the output is the staged rows whose fingerprint is unique, as they are, plus a
   real ``DISTINCT`` over the rows sharing a fingerprint.

Rows with a unique fingerprint have no duplicate (equal rows hash equally), and rows
sharing one are compared in full, so the result is exact whatever the hash. At 10 M
rows under the 312 MB limit it took 32.5-33.1 CPU s and 58-63 s against the one-query
DISTINCT's 37.3-37.7 CPU s and 102-109 s (two rounds each, side by side, load 5-11 on
2 cores; bench/designs.py keeps both shapes, ``fp-pqstage`` and ``distinct-zstd1``).
The stage costs disk in the spill dir: about 100 bytes a row, uncompressed.
"""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dsjob.errors import InputError
from dsjob.inference import Cleaned, _no_rows, check_misfits, with_retyping
from dsjob.sandbox import _check_transform, _sandbox
from dsjob.sqltext import _quote_ident, _quote_str, _scalar

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb

    from dsjob.processing import ProcessSettings
    from dsjob.scancount import Counts


OUTPUT_FORMATS = ("parquet", "csv")


def fingerprint(columns: list[str]) -> str:
    """SQL of DuckDB's 64-bit ``hash()`` over ``columns``' cleaned, typed values.

    ``hash`` gives NULLs, NaNs and -0.0/0.0 the same value wherever DISTINCT treats
    them as equal. It must be applied in a SELECT *wrapping* the cleaning one: in the
    same SELECT as ``trim(c) AS c`` it would hash the raw ``c``.
    """
    return f"hash({', '.join(_quote_ident(c) for c in columns)})"


class Counter(Protocol):
    """Where the step's counts come from (see :class:`dsjob.scancount.StepCounter`)."""

    def scanned(self, con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> None:
        """Called right after the query that read the whole input, before any other query."""

    def __call__(self) -> Counts:
        """The counts; may read the input again, so it is called before the sandbox locks."""
        ...


@dataclass(frozen=True)
class Written:
    """What :func:`dedup_and_write` wrote: files, rows in them, rows left after dedup."""

    files: tuple[Path, ...]
    rows_out: int
    deduped: int
    cleaned: Cleaned


def dedup_and_write(
    con: duckdb.DuckDBPyConnection,
    cleaned: Cleaned,
    output_dir: Path,
    settings: ProcessSettings,
    counts: Counter | None = None,
    *,
    fingerprint_of: Callable[[list[str]], str] = fingerprint,
) -> Written:
    """Deduplicate (and transform) into ``<dataset>.<fmt>`` files in ``output_dir``.

    Files are written under hidden ``.partial`` names and renamed only once the
    result is known to be non-empty, so a failing run leaves no output behind.
    A column whose later values misfit its inferred type is re-typed VARCHAR and
    the write repeated.

    Args:
        con: the step's connection (see :func:`connect`).
        cleaned: what :func:`sniff_and_clean` returned.
        output_dir: where the files go.
        settings: formats, dataset name and transform.
        counts: told when the input has been scanned (its profile holds the counts),
            and called for :class:`Counts` before the transform is sandboxed (a
            counting scan reads the input file); may be None.
        fingerprint_of: SQL of the row fingerprint over the given columns (tests
            inject a weak one to force collisions; the result stays exact).

    Raises:
        InputError: nothing is left to write.
        UserCodeError: the transform failed or was refused.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        return with_retyping(
            con,
            cleaned,
            lambda current: _write(
                con, current, output_dir, settings, counts, fingerprint_of=fingerprint_of
            ),
        )
    finally:
        _discard_partials(output_dir, settings)


def _write(
    con: duckdb.DuckDBPyConnection,
    cleaned: Cleaned,
    output_dir: Path,
    settings: ProcessSettings,
    counts: Counter | None,
    *,
    fingerprint_of: Callable[[list[str]], str],
) -> Written:
    distinct = f"SELECT DISTINCT * FROM ({cleaned.kept()})"
    # Every type DuckDB reads from CSV or Parquet comes back from its own Parquet
    # writer as the same type (checked for integers, DECIMAL, FLOAT, BLOB, TIME(TZ),
    # TIMESTAMP_NS/TZ, INTERVAL, UUID, LIST, STRUCT, MAP, JSON), so the stage is exact.
    if settings.transform_sql is None:
        stage = _stage_file(con)
        try:
            query = _staged(con, cleaned, stage, fingerprint_of, counts)
            files, rows = _copy_all(con, query, output_dir, settings)
        finally:
            stage.unlink(missing_ok=True)
        deduped = rows
    else:
        # Materialised once: counted for the manifest, then read by the transform.
        con.execute(f"CREATE OR REPLACE TEMP TABLE dsjob_clean AS {distinct}")
        if counts is not None:
            counts.scanned(con, cleaned)
        check_misfits(con, cleaned)
        deduped = _scalar(con, "SELECT count(*) FROM dsjob_clean")
        if deduped == 0:
            raise _nothing_left(cleaned, "cleaning")
        con.execute("CREATE OR REPLACE TEMP VIEW input AS SELECT * FROM dsjob_clean")
        if counts is not None:
            counts()
        _sandbox(con, output_dir)
        query = _check_transform(con, settings.transform_sql)
        files, rows = _copy_all(con, query, output_dir, settings)
    if rows == 0:
        if counts is not None and counts().rows_in == counts().malformed:
            raise _no_rows(cleaned)
        raise _nothing_left(cleaned, "cleaning" if settings.transform_sql is None else "transform")
    final = []
    for partial in files:
        target = partial.with_name(partial.name.removeprefix(".").removesuffix(".partial"))
        partial.replace(target)
        final.append(target)
    return Written(files=tuple(final), rows_out=rows, deduped=deduped, cleaned=cleaned)


def _stage_file(con: duckdb.DuckDBPyConnection) -> Path:
    """A fresh file name in the connection's spill dir (private to the run)."""
    spill = Path(str(con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]))
    spill.mkdir(parents=True, exist_ok=True)
    return spill / f"dsjob-stage-{uuid.uuid4().hex}.parquet"


def _staged(
    con: duckdb.DuckDBPyConnection,
    cleaned: Cleaned,
    stage: Path,
    fingerprint_of: Callable[[list[str]], str],
    counts: Counter | None,
) -> str:
    """Stage the kept rows with their fingerprint; returns the SELECT of them without duplicates."""
    fp = fingerprint_of(list(cleaned.types))
    # A name no input column has (an input may well have a "dsjob_fp" column).
    name = next(f"dsjob_fp{i or ''}" for i in range(len(cleaned.types) + 1)
                if f"dsjob_fp{i or ''}" not in cleaned.types)  # fmt: skip
    col = _quote_ident(name)
    # The fingerprint wraps the cleaning SELECT, so it hashes the cleaned values.
    hashed = f"SELECT *, {fp} AS {col} FROM ({cleaned.kept()})"
    # Uncompressed: the stage is read back at once, and encoding it costs less CPU than zstd.
    con.execute(
        f"COPY ({hashed}) TO {_quote_str(str(stage))} (FORMAT parquet, COMPRESSION uncompressed)"
    ).fetchall()
    if counts is not None:
        counts.scanned(con, cleaned)
    check_misfits(con, cleaned)
    rows = f"read_parquet({_quote_str(str(stage))})"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE dsjob_twice AS "
        f"SELECT {col} FROM {rows} GROUP BY {col} HAVING count(*) > 1"
    )
    return (
        f"SELECT * EXCLUDE ({col}) FROM {rows} ANTI JOIN dsjob_twice USING ({col}) "
        f"UNION ALL SELECT DISTINCT * EXCLUDE ({col}) FROM {rows} "
        f"SEMI JOIN dsjob_twice USING ({col})"
    )


def _nothing_left(cleaned: Cleaned, stage: str) -> InputError:
    """The error for a run that would publish an empty dataset."""
    if stage == "transform":
        return InputError("transform.sql selected no rows: nothing to publish")
    if cleaned.id_column is not None:
        return InputError(
            f"{cleaned.path.name}: no rows left after cleaning (every row has a NULL "
            f"{cleaned.id_column!r} or is malformed): nothing to publish"
        )
    return InputError(f"{cleaned.path.name}: no rows left after cleaning: nothing to publish")


def _partial(output_dir: Path, settings: ProcessSettings, fmt: str) -> Path:
    return output_dir / f".{settings.dataset}.{fmt}.partial"


def _discard_partials(output_dir: Path, settings: ProcessSettings) -> None:
    for fmt in OUTPUT_FORMATS:
        _partial(output_dir, settings, fmt).unlink(missing_ok=True)


def _copy_all(
    con: duckdb.DuckDBPyConnection,
    query: str,
    output_dir: Path,
    settings: ProcessSettings,
) -> tuple[list[Path], int]:
    """Write the query's result in every requested format; returns files and row count."""
    files: list[Path] = []
    rows_out = 0
    source = f"(\n{query}\n)"
    for fmt in sorted(settings.output_formats, key=OUTPUT_FORMATS.index):
        target = _partial(output_dir, settings, fmt)
        options = (
            # zstd level 1 (DuckDB's default is 3): ~15 % less CPU for the whole step at
            # 3 M rows for slightly larger files (bench/results.md, distinct-zstd1).
            "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"
            if fmt == "parquet"
            else "FORMAT csv, HEADER true, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S'"
        )
        row = con.execute(f"COPY {source} TO {_quote_str(str(target))} ({options})").fetchall()
        rows_out = int(row[0][0]) if row else 0
        files.append(target)
        if not files[1:]:
            # Further formats convert the first file, in its order: no second dedup.
            # Set once: the sandbox may have locked the configuration by now.
            source = f"(SELECT * FROM read_{fmt}({_quote_str(str(target))}))"
    return files, rows_out
