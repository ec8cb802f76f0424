"""The built-in processing step: clean, deduplicate and convert a CSV or Parquet file with DuckDB.

What the step does, in one streaming, memory-bounded DuckDB query (plus a
cheap counting scan of the input that runs beside it on a second cursor):

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
:func:`count_rows`, :func:`dedup_and_write`; :func:`run_builtin` chains them.

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

import csv
import logging
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from dsjob.errors import (
    DsjobError,
    InputError,
    MalformedInputError,
    OutOfMemoryError,
    UserCodeError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb

LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

OUTPUT_FORMATS = ("parquet", "csv")
#: Rows the type inference looks at (from the start of the input).
SAMPLE_ROWS = 20_480
#: Widest input the step accepts: DuckDB's planning of the cleaning query grows
#: faster than linearly with width (about 2 s at 1,000 columns, 6 s at 2,000).
MAX_COLUMNS = 1_000
#: From this width on, DuckDB's common-subexpression pass (quadratic in the number
#: of expressions, and useless for the cleaning query's shape) is switched off.
_WIDE = 100
#: Types tried, in order, for a string column whose trimmed sample all casts.
_CANDIDATE_TYPES = ("BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN")
#: Memory kept back from the limit for the Python interpreter and the DuckDB binary.
_HEADROOM_BYTES = 200 * 1024**2
_MIN_MEMORY_BYTES = 128 * 1024**2
_PARQUET_MAGIC = b"PAR1"
#: Raised (via DuckDB's error()) by the cleaning query when a value does not fit
#: its column's inferred type; carries the column's index.
_MISFIT = "dsjob-misfit:"
CGROUP_ROOT = Path("/sys/fs/cgroup")


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


@dataclass(frozen=True)
class Cleaned:
    """The input as :func:`sniff_and_clean` found it: how to read it and how to clean it.

    ``raw`` maps each input column to the type the reader gives it (all VARCHAR
    for CSV); ``types`` to the type the cleaned column gets.
    """

    path: Path
    is_parquet: bool
    skip_bad: bool
    raw: dict[str, str]
    types: dict[str, str]
    id_column: str | None
    sampled: int = 0
    #: Columns read as text because a value misfit the type first chosen for them.
    retyped: tuple[str, ...] = field(default=())

    def source(self) -> str:
        """The table function that reads the input, typed by the reader (fast native parse)."""
        return _source(
            self.path, is_parquet=self.is_parquet, skip_bad=self.skip_bad, varchar=self.retyped
        )

    def count_source(self) -> str:
        """The reader for counting: all text (no type can reject a row), bad rows recorded."""
        return _source(
            self.path, is_parquet=self.is_parquet, skip_bad=self.skip_bad, all_varchar=True
        )

    def select(self) -> str:
        """SELECT of the cleaned, typed rows (trimmed, empty -> NULL), NULL ids included."""
        trimmed, typed = [], []
        for i, (name, kind) in enumerate(self.types.items()):
            q = _quote_ident(name)
            raw = self.raw[name]
            trimmed.append(f"NULLIF(trim({q}), '') AS {q}" if raw == "VARCHAR" else q)
            if raw != "VARCHAR" or kind == "VARCHAR":
                typed.append(q)
            else:
                # A value the sample did not foresee raises (naming the column by index)
                # instead of silently becoming NULL or a rounded number.
                guard = f"CASE WHEN {q} IS NOT NULL THEN error('{_MISFIT}{i}') END"
                typed.append(f"coalesce({_try_cast(q, kind)}, {guard}) AS {q}")
        # Trimming in an inner SELECT lets the casts reference a column instead of
        # repeating the trim expression, so no common-subexpression pass is needed.
        inner = f"SELECT {', '.join(trimmed)} FROM {self.source()}"
        return f"SELECT {', '.join(typed)} FROM ({inner})"

    def kept(self) -> str:
        """SELECT of the cleaned rows that keep their place: non-NULL id (duplicates still in)."""
        where = f" WHERE {_quote_ident(self.id_column)} IS NOT NULL" if self.id_column else ""
        return f"SELECT * FROM ({self.select()}){where}"

    def as_varchar(self, name: str) -> Cleaned:
        """The same input with column ``name`` read and kept as (trimmed) VARCHAR."""
        return replace(
            self,
            raw={**self.raw, name: "VARCHAR"},
            types={**self.types, name: "VARCHAR"},
            retyped=(*self.retyped, name),
        )


class ColumnMisfitError(Exception):
    """A value after the sample does not fit its column's type (internal: triggers a re-type)."""

    def __init__(self, column: str) -> None:
        """Args: column: the column to re-type VARCHAR."""
        super().__init__(column)
        self.column = column


@dataclass(frozen=True)
class Counts:
    """What one scan of the input counted."""

    rows_in: int
    null_id: int
    malformed: int

    @property
    def valid(self) -> int:
        """Rows that survive cleaning before dedup."""
        return self.rows_in - self.malformed - self.null_id


@dataclass(frozen=True)
class Written:
    """What :func:`dedup_and_write` wrote: files, rows in them, rows left after dedup."""

    files: tuple[Path, ...]
    rows_out: int
    deduped: int
    cleaned: Cleaned


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
            # Counting needs its own scan; it runs beside the main query on a second
            # cursor, soaking up the core the dedup leaves idle, not as a serial pass.
            counter = con.cursor()
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsjob-count") as pool:
                counting = pool.submit(count_rows, counter, cleaned)
                try:
                    written = dedup_and_write(con, cleaned, output_dir, settings, counting.result)
                except BaseException:
                    counter.interrupt()
                    raise
                counts = counting.result()
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


# --- limits from the cgroup ---------------------------------------------------------------------


def default_memory_limit(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Bytes DuckDB may use: the cgroup or RAM limit minus headroom (never below 128 MiB)."""
    total = cgroup_memory_limit(cgroup_root) or os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"
    )
    return max(_MIN_MEMORY_BYTES, min(int(total * 0.75), total - _HEADROOM_BYTES))


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """The container's memory limit under ``root`` (cgroup v2, then v1), or None when unlimited."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            raw = path.read_text(encoding="ascii").strip()
        except OSError:
            continue
        # v2 says "max"; v1 reports "unlimited" as a huge number near 2**63.
        if raw.isdigit() and int(raw) < 2**60:
            return int(raw)
    return None


def default_threads(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the cgroup CPU quota (v2, then v1), else the affinity mask."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota(cgroup_root)
    return max(1, min(quota, cpus or 1)) if quota else max(1, cpus or 1)


def _cgroup_cpu_quota(root: Path) -> int | None:
    """Whole CPUs the cgroup quota allows (rounded up), or None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text(encoding="ascii").split()
        return None if quota == "max" else -(-int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        v1 = root / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text(encoding="ascii"))
        period_us = int((v1 / "cpu.cfs_period_us").read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 else -(-quota_us // period_us)


# --- phase 1: sniff and clean -------------------------------------------------------------------


def sniff_and_clean(
    con: duckdb.DuckDBPyConnection, input_path: Path, settings: ProcessSettings
) -> Cleaned:
    """Read the input's columns and infer the cleaned types from a sample.

    Raises:
        InputError: empty, header-only, too wide or unreadable input.
    """
    is_parquet = _is_parquet(input_path)
    skip_bad = settings.on_bad_rows == "skip"
    if not is_parquet:
        _check_not_empty(input_path)
        _check_width(len(_header_names(input_path)), input_path)
    raw = _describe(con, input_path, is_parquet=is_parquet, skip_bad=skip_bad)
    _check_width(len(raw), input_path)
    if len(raw) >= _WIDE:
        con.execute("SET disabled_optimizers = 'common_subexpressions'")
    cleaned = Cleaned(
        path=input_path,
        is_parquet=is_parquet,
        skip_bad=skip_bad,
        raw=raw,
        types=dict(raw),
        id_column=settings.id_column if settings.id_column in raw else None,
    )
    retype, sampled = _infer_trimmed(con, cleaned)
    if sampled == 0 and not skip_bad:
        raise _no_rows(cleaned)
    return replace(cleaned, types={**raw, **retype}, sampled=sampled)


def _describe(
    con: duckdb.DuckDBPyConnection, path: Path, *, is_parquet: bool, skip_bad: bool
) -> dict[str, str]:
    """Column name -> type as the reader sees the raw input."""
    import duckdb  # noqa: PLC0415

    source = _source(path, is_parquet=is_parquet, skip_bad=skip_bad)
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    except duckdb.InvalidInputException as error:
        if is_parquet or "sniffing" not in str(error):
            raise
        # The sniffer only says "could not detect the dialect"; a plain strict
        # read with the header's columns names the offending line.
        _locate_bad_line(con, path)
        raise
    return {str(r[0]): str(r[1]) for r in rows}


def _locate_bad_line(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Re-read with no detection so DuckDB reports the first bad line."""
    names = _header_names(path)
    if not names:
        return
    spec = ", ".join(f"{_quote_str(str(n))}: 'VARCHAR'" for n in names)
    con.execute(
        f"SELECT count(*) FROM read_csv({_quote_str(str(path))}, delim = ',', "
        f"quote = '\"', escape = '\"', header = true, auto_detect = false, "
        f"columns = {{{spec}}})"
    ).fetchall()


def _infer_trimmed(con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> tuple[dict[str, str], int]:
    """Narrower types for string columns whose trimmed sample values all cast; rows sampled.

    The sample is unpivoted to (column, value) pairs and grouped by column, so the
    query has a fixed number of expressions whatever the width: linear in columns.
    """
    strings = [name for name, kind in cleaned.raw.items() if kind == "VARCHAR"]
    sample = f"SELECT * FROM {cleaned.source()} LIMIT {SAMPLE_ROWS}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE dsjob_sample AS {sample}")
    sampled = _scalar(con, "SELECT count(*) FROM dsjob_sample")
    if not strings or not sampled:
        return {}, sampled
    cols = ", ".join(_quote_ident(n) for n in strings)
    value = "NULLIF(trim(raw), '')"
    aggs = ", ".join(f"count({_try_cast(value, t)})" for t in _CANDIDATE_TYPES)
    found = con.execute(
        f"SELECT name, count({value}), {aggs} FROM "
        f"(UNPIVOT (SELECT {cols} FROM dsjob_sample) ON COLUMNS(*) INTO NAME name VALUE raw) "
        "GROUP BY name"
    ).fetchall()
    con.execute("DROP TABLE dsjob_sample")
    retype = {}
    for name, total, *casts in found:
        for kind, ok in zip(_CANDIDATE_TYPES, casts, strict=True):
            if total and ok == total:
                retype[str(name)] = kind
                break
    if retype:
        LOGGER.info("types inferred after trimming", extra={"columns": retype})
    return retype, sampled


# --- phase 2: count -----------------------------------------------------------------------------


def count_rows(con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> Counts:
    """Rows in, rows with a NULL id and malformed rows, in one cheap scan on ``con``."""
    if cleaned.id_column is None:
        nulls = "0"
    else:
        q = _quote_ident(cleaned.id_column)
        text = not cleaned.is_parquet or cleaned.raw[cleaned.id_column] == "VARCHAR"
        test = f"NULLIF(trim({q}), '') IS NULL" if text else f"{q} IS NULL"
        nulls = f"count(*) FILTER (WHERE {test})"
    rejects = cleaned.skip_bad and not cleaned.is_parquet
    row = con.execute(f"SELECT count(*), {nulls} FROM {cleaned.count_source()}").fetchall()
    good, null_ids = (int(row[0][0]), int(row[0][1])) if row else (0, 0)
    malformed = (
        _scalar(con, "SELECT count(DISTINCT (scan_id, line)) FROM reject_errors") if rejects else 0
    )
    if malformed:
        LOGGER.warning("skipped malformed rows", extra={"malformed": malformed})
    return Counts(rows_in=good + malformed, null_id=null_ids, malformed=malformed)


# --- phase 3: dedup and write -------------------------------------------------------------------


def dedup_and_write(
    con: duckdb.DuckDBPyConnection,
    cleaned: Cleaned,
    output_dir: Path,
    settings: ProcessSettings,
    counts: Callable[[], Counts] | None = None,
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
        counts: a callable returning :class:`Counts`, waited for before the
            transform is sandboxed (the counting scan reads the input file); may be None.

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


def with_retyping(
    con: duckdb.DuckDBPyConnection, cleaned: Cleaned, work: Callable[[Cleaned], _T]
) -> _T:
    """Run ``work(cleaned)``; when a value misfits its column's type, re-type it and rerun.

    ``work`` runs a query over :meth:`Cleaned.select`; it must undo its own partial
    effects when it raises (the rerun starts from scratch). In skip mode it calls
    :func:`check_misfits` after its query, since misfits are then recorded, not raised.
    """
    import duckdb  # noqa: PLC0415

    while True:
        # Rejects from an earlier attempt (or the sample) must not be read as this one's.
        con.execute("DROP TABLE IF EXISTS reject_errors")
        con.execute("DROP TABLE IF EXISTS reject_scans")
        try:
            return work(cleaned)
        except (
            ColumnMisfitError,
            duckdb.InvalidInputException,
            duckdb.ConversionException,
        ) as error:
            name = _misfit_column(error, cleaned)
            if name is None or name in cleaned.retyped:
                raise
            LOGGER.warning(
                "a value after the sample does not fit the inferred type; column re-typed VARCHAR",
                extra={"column": name, "inferred": cleaned.types[name]},
            )
            cleaned = cleaned.as_varchar(name)


_CONVERTING = re.compile(r'Error when converting column "(.+?)"\.')


def _misfit_column(error: Exception, cleaned: Cleaned) -> str | None:
    """The column a misfit error is about, or None for any other error."""
    if isinstance(error, ColumnMisfitError):
        return error.column
    guard = re.search(rf"{_MISFIT}(\d+)", str(error))
    if guard:
        return list(cleaned.types)[int(guard.group(1))]
    reader = _CONVERTING.search(str(error))
    return reader.group(1) if reader and reader.group(1) in cleaned.types else None


def check_misfits(con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> None:
    """In skip mode, raise :class:`ColumnMisfitError` if the last scan rejected a value by type."""
    if not cleaned.skip_bad or cleaned.is_parquet:
        return
    found = con.execute(
        "SELECT column_name FROM reject_errors WHERE error_type = 'CAST' LIMIT 1"
    ).fetchall()
    if found:
        raise ColumnMisfitError(str(found[0][0]))


def _write(
    con: duckdb.DuckDBPyConnection,
    cleaned: Cleaned,
    output_dir: Path,
    settings: ProcessSettings,
    counts: Callable[[], Counts] | None,
) -> Written:
    distinct = f"SELECT DISTINCT * FROM ({cleaned.kept()})"
    if settings.transform_sql is None:
        files, rows = _copy_all(con, distinct, output_dir, settings, cleaned)
        deduped = rows
    else:
        # Materialised once: counted for the manifest, then read by the transform.
        con.execute(f"CREATE OR REPLACE TEMP TABLE dsjob_clean AS {distinct}")
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
            check_misfits(con, cleaned)
        files.append(target)
        if not files[1:]:
            # Further formats convert the first file, in its order: no second dedup.
            # Set once: the sandbox may have locked the configuration by now.
            source = f"(SELECT * FROM read_{fmt}({_quote_str(str(target))}))"
    return files, rows_out


def _sandbox(con: duckdb.DuckDBPyConnection, output_dir: Path) -> None:
    """From here on the connection reads its own tables and writes only ``output_dir``."""
    # The transform is the user's logic: an ORDER BY in it must hold in the file.
    con.execute("SET preserve_insertion_order = true")
    con.execute(f"SET allowed_directories = [{_quote_str(str(output_dir.resolve()) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _check_transform(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """The transform's one SELECT, parsed by DuckDB and bound (not run) to report mistakes early."""
    import duckdb  # noqa: PLC0415

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise UserCodeError(f"transform.sql failed: {_first_line(error)}") from None
    if len(statements) != 1:
        raise UserCodeError(
            f"transform.sql must be exactly one SELECT statement, found {len(statements)}"
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        verb = statements[0].query.split(maxsplit=1)[0].upper()
        raise UserCodeError(
            f"transform.sql refused: only a read-only SELECT is allowed, found {verb} "
            f"(a {kind.name} statement)"
        )
    query = statements[0].query.strip().rstrip(";")
    try:
        con.execute(f"DESCRIBE (\n{query}\n)").fetchall()
    except duckdb.Error as error:
        raise _transform_error(error) from None
    return query


def _transform_error(error: Exception) -> UserCodeError:
    import duckdb  # noqa: PLC0415

    if isinstance(error, duckdb.PermissionException):
        return UserCodeError(
            f"transform.sql refused: it may read only the view `input` ({_first_line(error)})"
        )
    return UserCodeError(f"transform.sql failed: {_first_line(error)}")


# --- helpers ------------------------------------------------------------------------------------


def _schema(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    rows = con.execute(f"DESCRIBE SELECT * FROM {reader}({_quote_str(str(path))})").fetchall()
    return {str(row[0]): str(row[1]) for row in rows}


def _source(
    path: Path,
    *,
    is_parquet: bool,
    skip_bad: bool,
    varchar: tuple[str, ...] = (),
    all_varchar: bool = False,
) -> str:
    quoted = _quote_str(str(path))
    if is_parquet:
        return f"read_parquet({quoted})"
    opts = "delim = ',', quote = '\"', escape = '\"', header = true, encoding = 'utf-8'"
    if all_varchar:
        opts += ", all_varchar = true"
    elif varchar:
        opts += ", types = {" + ", ".join(f"{_quote_str(c)}: 'VARCHAR'" for c in varchar) + "}"
    if skip_bad:
        # Rejected rows are recorded (not just ignored) so the count can tell ragged
        # rows (malformed) from type misfits (a column to re-type, never a dropped row).
        opts += ", store_rejects = true"
    return f"read_csv({quoted}, {opts})"


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _try_cast(value: str, kind: str) -> str:
    """TRY_CAST, but integers and dates must look like them.

    DuckDB rounds '2.5' to the integer 3 and truncates a timestamp to its date.
    """
    shape = _SHAPES.get(kind)
    if shape:
        return (
            f"CASE WHEN regexp_full_match({value}, '{shape}') THEN TRY_CAST({value} AS {kind}) END"
        )
    return f"TRY_CAST({value} AS {kind})"


_SHAPES = {"BIGINT": "[+-]?[0-9]+", "DATE": "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"}


def _no_rows(cleaned: Cleaned) -> MalformedInputError:
    """The error for input without a single data row."""
    if cleaned.is_parquet:
        return MalformedInputError(f"{cleaned.path.name}: no rows")
    return MalformedInputError(
        f"{cleaned.path.name}: header only, no data rows (line 2 is missing"
        + (" or every row is malformed)" if cleaned.skip_bad else ")")
    )


def _check_width(width: int, path: Path) -> None:
    if width > MAX_COLUMNS:
        raise InputError(
            f"{path.name}: {width:,} columns; the built-in step handles at most "
            f"{MAX_COLUMNS:,} (use a script.py for wider data)"
        )


def _is_parquet(path: Path) -> bool:
    """Parquet by magic bytes (names lie), falling back to the extension."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == _PARQUET_MAGIC
    except OSError:
        return path.suffix.lower() == ".parquet"


def _check_not_empty(path: Path) -> None:
    """Empty (or whitespace-only) CSV input fails before DuckDB invents a column for it."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise MalformedInputError(f"{path.name}: input file is empty (line 1)")


def _header_names(path: Path) -> list[str]:
    """Column names from the CSV header line, parsed the way DuckDB is told to."""
    with path.open("rb") as handle:
        first = handle.readline(16 * 1024 * 1024)
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedInputError(f"{path.name}: line 1 is not valid UTF-8") from None
    return next(csv.reader([text]), [])


_LINE = re.compile(r"CSV Error on Line: (\d+)")
_ORIGINAL = re.compile(r"Original Line: (.*)")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _translate(error: Exception) -> DsjobError:
    """Turn a DuckDB error into one clear dsjob error (no DuckDB traceback)."""
    import duckdb  # noqa: PLC0415

    text = str(error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if isinstance(error, duckdb.OutOfMemoryException):
        return OutOfMemoryError(
            f"DuckDB ran out of memory ({_first_line(error)}); raise memory-limit (and the "
            "container's memory with it), or free space in the spill directory"
        )
    line = _LINE.search(text)
    if line:
        original = _ORIGINAL.search(text)
        reason = next(
            (
                ln
                for ln in lines
                if not ln.startswith(("Invalid Input Error", "Original Line", "CSV Error"))
            ),
            "unreadable row",
        )
        # DuckDB's "Original Line" is wrong for encoding errors; show it for the rest.
        shown = f" ({original.group(1)[:120]!r})" if original and "unicode" not in reason else ""
        return MalformedInputError(f"malformed CSV at line {line.group(1)}{shown}: {reason}")
    if isinstance(error, duckdb.ConversionException | duckdb.InvalidInputException):
        return MalformedInputError(f"malformed input: {_first_line(error)}")
    return DsjobError(f"built-in step failed: {_first_line(error)}")
