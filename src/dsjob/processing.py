"""The built-in processing step: clean, deduplicate and convert a CSV or Parquet file with DuckDB.

What the step does, in one streaming, memory-bounded DuckDB query that parses a
CSV input once (its counts come from DuckDB's profile of that query, see
:mod:`dsjob.scancount`; a Parquet input is counted by a cheap scan beside it):

* reads the input (CSV: RFC 4180, comma, ``"`` quote, header line, UTF-8; or Parquet),
* trims every string and turns empty strings into NULL,
* types columns with DuckDB's CSV sniffer (native, fast parsing), then gives text
  columns a narrower type when their *trimmed* sample all fits one (``" 2.5 "`` is
  a DOUBLE, ``" 2024-01-01 "`` a DATE),
* drops rows whose id column is NULL (skipped when the input has no such column)
  and exact duplicate rows,
* optionally runs ``transform_sql`` against a view named ``input`` (the cleaned
  rows) and writes *its* result instead,
* writes ``<dataset>.parquet`` (zstd) and/or ``<dataset>.csv``.

The phases are public functions that take the connection, so the fan-out's
map and reduce phases reuse them: :func:`connect`, :func:`sniff_and_clean`,
:func:`count_rows`, :func:`dedup_and_write`; :func:`run_builtin` chains them
(with a :class:`StepCounter`).
The parts live in their own modules (:mod:`dsjob.sniffing` reads the raw input,
:mod:`dsjob.inference` types and re-types columns, :mod:`dsjob.dedup` writes,
:mod:`dsjob.sandbox` guards the transform, :mod:`dsjob.limits` sizes DuckDB,
:mod:`dsjob.sqltext` quotes and translates errors); this module re-exports them.

Policies where the job contract leaves a choice:

* **Row order is not preserved** (``preserve_insertion_order`` off, so dedup and
  the writer run in parallel and spill); sort in ``transform_sql`` when it matters.
* **Memory.** ``memory_limit`` defaults to the cgroup (container) limit or RAM
  minus headroom (512 MiB container -> 312 MB); DuckDB spills to ``temp_dir``.
  Running out anyway is :class:`~dsjob.errors.OutOfMemoryError` (exit 6).
* **Types never make a valid file malformed.** When a value after the sample
  does not fit its column's inferred type (``ABC`` in an integer column, a
  second timestamp format, an integer beyond BIGINT), that column is re-typed
  VARCHAR and the step runs again, with a warning naming the column and type
  (the reader raises it in fail mode; skip mode finds it in DuckDB's reject table).
* **Malformed rows** (ragged rows, undecodable bytes) fail the run with
  :class:`~dsjob.errors.MalformedInputError` naming the line (``on_bad_rows="fail"``),
  or are skipped and counted as ``dropped["malformed"]`` (``"skip"``).
* **An empty result always fails** (empty file, header only, every id NULL, a
  transform that selects nothing): :class:`~dsjob.errors.InputError`, exit 3, and
  no output file is left behind, so the publisher never prunes good output for it.
* **Width** is capped at :data:`MAX_COLUMNS`; wider inputs fail naming the count.
* **The transform is sandboxed**: exactly one SELECT (checked with DuckDB's own
  parser), run with file access locked off, so it reads ``input`` and nothing else.
  A failing or refused transform is :class:`~dsjob.errors.UserCodeError` (exit 4).
* Counts: ``rows_in`` counts every data row (malformed ones included);
  ``rows_out`` is what was written; ``dropped`` has ``null_id``, ``duplicate``
  and ``malformed``. With a transform, ``dropped`` describes the cleaning of
  ``input`` and ``rows_out`` the transform's result.
"""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# The step's parts live in their own modules; this one chains them and stays the
# entry point the rest of dsjob (shuffle, job, fan-out, bench, tests) imports from.
from dsjob import scancount
from dsjob.dedup import OUTPUT_FORMATS, Written, dedup_and_write
from dsjob.inference import (
    SAMPLE_ROWS,
    Cleaned,
    ColumnMisfitError,
    _no_rows,
    check_misfits,
    sniff_and_clean,
    with_retyping,
)
from dsjob.limits import CGROUP_ROOT, cgroup_memory_limit, default_memory_limit, default_threads
from dsjob.scancount import Counts, StepCounter, count_rows
from dsjob.sniffing import MAX_COLUMNS
from dsjob.sqltext import _quote_ident, _quote_str, _translate

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb

__all__ = [
    "CGROUP_ROOT",
    "MAX_COLUMNS",
    "OUTPUT_FORMATS",
    "SAMPLE_ROWS",
    "Cleaned",
    "ColumnMisfitError",
    "Counts",
    "ProcessResult",
    "ProcessSettings",
    "StepCounter",
    "Written",
    # Private helpers that dsjob.shuffle and bench/designs.py reach as processing._name.
    "_no_rows",
    "_quote_ident",
    "_quote_str",
    "_translate",
    "cgroup_memory_limit",
    "check_misfits",
    "connect",
    "count_rows",
    "dedup_and_write",
    "default_memory_limit",
    "default_threads",
    "run_builtin",
    "sniff_and_clean",
    "with_retyping",
]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessSettings:
    """How the built-in step runs; validated by :mod:`dsjob.config`, every field has a default."""

    id_column: str = "id"
    output_formats: tuple[str, ...] = ("parquet",)
    dataset: str = "data"
    transform_sql: str | None = None
    on_bad_rows: str = "fail"
    memory_limit: str | None = None
    threads: int | None = None
    temp_dir: Path | None = None
    # Called with the step's connection once it is open, so another thread can poll
    # `query_progress()`; None (the default) keeps DuckDB's progress tracking off.
    on_connect: Callable[[duckdb.DuckDBPyConnection], None] | None = None


@dataclass(frozen=True)
class ProcessResult:
    """What the step did: counts for the manifest, the files it wrote and their schema."""

    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    files: tuple[Path, ...]
    columns: dict[str, str]


def run_builtin(input_path: Path, output_dir: Path, settings: ProcessSettings) -> ProcessResult:
    """Clean, deduplicate and write ``input_path`` into ``output_dir``.

    Args:
        input_path: a CSV or Parquet file (detected by magic bytes, then extension).
        output_dir: where ``<dataset>.parquet`` / ``<dataset>.csv`` are written; created if missing.
        settings: see :class:`ProcessSettings`.

    Raises:
        InputError: the input cannot be read as clean tabular data, or nothing is left.
        UserCodeError: ``transform_sql`` failed or was refused.
        OutOfMemoryError: DuckDB ran out of memory even with spilling.
    """
    import duckdb  # noqa: PLC0415 -- lazy: `dsjob --help` must not pay for DuckDB

    started = time.monotonic()
    output_dir.mkdir(parents=True, exist_ok=True)
    own_temp = settings.temp_dir is None
    temp_dir = (
        _private_spill_dir(input_path.parent) if settings.temp_dir is None else settings.temp_dir
    )
    temp_dir.mkdir(parents=True, exist_ok=True)
    try:
        with connect(settings, temp_dir) as con:
            cleaned = sniff_and_clean(con, input_path, settings)
            counter = StepCounter(con)
            if cleaned.is_parquet:
                # Parquet counts are cheap (metadata and one column) but still a scan;
                # it runs beside the main query on a second cursor, not as a serial pass.
                cursor = con.cursor()
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsjob-count") as pool:
                    counter.pending = pool.submit(count_rows, cursor, cleaned).result
                    try:
                        written = dedup_and_write(con, cleaned, output_dir, settings, counter)
                    except BaseException:
                        cursor.interrupt()
                        raise
                    counts = counter()
            else:
                # A CSV is parsed once: the main query's profile holds the counts.
                scancount.enable(con)
                written = dedup_and_write(con, cleaned, output_dir, settings, counter)
                counts = counter()
            columns = _schema(con, written.files[0])
    except duckdb.Error as error:
        raise _translate(error) from None
    finally:
        if own_temp:
            shutil.rmtree(temp_dir, ignore_errors=True)
    result = ProcessResult(
        rows_in=counts.rows_in,
        rows_out=written.rows_out,
        dropped={
            "null_id": counts.null_id,
            "duplicate": counts.valid - written.deduped,
            "malformed": counts.malformed,
        },
        files=written.files,
        columns=columns,
    )
    LOGGER.info(
        "built-in step done",
        extra={
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
            "dropped": result.dropped,
            "files": [p.name for p in result.files],
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return result


def _private_spill_dir(beside: Path) -> Path:
    """A fresh spill dir next to the input (same disk), or in the system temp dir if read-only."""
    try:
        return Path(tempfile.mkdtemp(prefix=".duckdb-spill-", dir=beside))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="dsjob-spill-"))


def connect(settings: ProcessSettings, temp_dir: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the step's memory limit, threads and spill directory."""
    import duckdb  # noqa: PLC0415

    limit = settings.memory_limit or f"{default_memory_limit() // 1024**2}MiB"
    con = duckdb.connect(
        config={
            "memory_limit": limit,
            "threads": settings.threads or default_threads(),
            "temp_directory": str(temp_dir),
            # Order is not part of the contract; dropping it lets DISTINCT and the
            # Parquet writer stream and spill instead of buffering for ordering.
            "preserve_insertion_order": False,
            # The step reads exactly one local file and writes its output dir.
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    # Session options (not accepted in the connect-time config). DuckDB tracks
    # query_progress() only while its progress bar is on; its own printing stays off.
    con.execute(f"SET enable_progress_bar = {str(settings.on_connect is not None).lower()}")
    if settings.on_connect is not None:
        con.execute("SET enable_progress_bar_print = false")
        settings.on_connect(con)
    return con


def _schema(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    rows = con.execute(f"DESCRIBE SELECT * FROM {reader}({_quote_str(str(path))})").fetchall()
    return {str(row[0]): str(row[1]) for row in rows}
