"""Phase 3 of the built-in step: deduplicate, run the transform, write the output files."""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dsjob.errors import InputError
from dsjob.inference import Cleaned, _no_rows, check_misfits, with_retyping
from dsjob.sandbox import _check_transform, _sandbox
from dsjob.sqltext import _quote_str, _scalar

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb

    from dsjob.processing import ProcessSettings
    from dsjob.scancount import Counts


OUTPUT_FORMATS = ("parquet", "csv")


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

    Raises:
        InputError: nothing is left to write.
        UserCodeError: the transform failed or was refused.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        return with_retyping(
            con, cleaned, lambda current: _write(con, current, output_dir, settings, counts)
        )
    finally:
        _discard_partials(output_dir, settings)


def _write(
    con: duckdb.DuckDBPyConnection,
    cleaned: Cleaned,
    output_dir: Path,
    settings: ProcessSettings,
    counts: Counter | None,
) -> Written:
    distinct = f"SELECT DISTINCT * FROM ({cleaned.kept()})"
    if settings.transform_sql is None:
        files, rows = _copy_all(con, distinct, output_dir, settings, cleaned, counts=counts)
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
    cleaned: Cleaned | None = None,
    *,
    counts: Counter | None = None,
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
        if cleaned is not None and not files:
            if counts is not None:
                counts.scanned(con, cleaned)
            check_misfits(con, cleaned)
        files.append(target)
        if not files[1:]:
            # Further formats convert the first file, in its order: no second dedup.
            # Set once: the sandbox may have locked the configuration by now.
            source = f"(SELECT * FROM read_{fmt}({_quote_str(str(target))}))"
    return files, rows_out
