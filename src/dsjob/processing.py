"""The built-in processing step: clean, deduplicate and convert a CSV or Parquet file with DuckDB.

What the step does, in one streaming, memory-bounded DuckDB query (plus a
cheap counting scan of the input that runs beside it on a second cursor):

* reads the input (CSV: RFC 4180, comma, ``"`` quote, header line, UTF-8; or Parquet),
* trims every string and turns empty strings into NULL,
* infers column types (DuckDB's sniffer, then a second look at string columns
  *after* trimming, so ``" 2.5 "`` becomes a DOUBLE and ``" 2024-01-01 "`` a DATE),
* drops rows whose id column is NULL (skipped when the input has no such column)
  and exact duplicate rows,
* optionally runs ``transform_sql`` against a view named ``input`` (the cleaned
  rows) and writes *its* result instead,
* writes ``<dataset>.parquet`` (zstd) and/or ``<dataset>.csv``.

Policies where the job contract leaves a choice:

* **Row order is not preserved.** ``preserve_insertion_order`` is off so the
  deduplication and the Parquet writer can run in parallel and spill freely;
  sort in ``transform_sql`` (``ORDER BY``) when order matters.
* **Memory.** ``memory_limit`` defaults to the cgroup (container) limit or the
  machine's RAM minus headroom for Python and the DuckDB binary (512 MiB
  container -> 312 MB); DuckDB spills to ``temp_dir`` beyond it, so inputs much
  larger than memory work. The exact-duplicate check holds every distinct row,
  so under a small limit it spills most of the input once: that, not parsing,
  is where a bounded run spends its extra time (see bench/results.md).
* **Malformed rows** (ragged rows, undecodable bytes, values that do not fit the
  inferred type) fail the run with :class:`~dsjob.errors.MalformedInputError`
  naming the line (``on_bad_rows="fail"``, the default), or are skipped and
  counted as ``dropped["malformed"]`` (``on_bad_rows="skip"``).
* **Empty input and header-only input always fail** (``MalformedInputError``):
  an empty extract almost always means an upstream failure, and publishing an
  empty dataset would let the publisher prune yesterday's good output.
* **A failing transform.sql** is user code failing: :class:`~dsjob.errors.UserCodeError`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob.errors import ConfigError, DsjobError, MalformedInputError, UserCodeError

if TYPE_CHECKING:
    import duckdb

LOGGER = logging.getLogger(__name__)

OUTPUT_FORMATS = ("parquet", "csv")
BAD_ROW_POLICIES = ("fail", "skip")
#: Rows the type re-inference looks at for trimmed string columns.
SAMPLE_ROWS = 20_480
#: Types tried, in order, for a string column whose trimmed sample all casts.
_CANDIDATE_TYPES = ("BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN")
#: Memory kept back from the limit for the Python interpreter and the DuckDB binary.
_HEADROOM_BYTES = 200 * 1024**2
_MIN_MEMORY_BYTES = 128 * 1024**2
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ProcessSettings:
    """How the built-in step runs; every field has a safe default."""

    id_column: str = "id"
    output_formats: tuple[str, ...] = ("parquet",)
    dataset: str = "data"
    transform_sql: str | None = None
    on_bad_rows: str = "fail"
    memory_limit: str | None = None
    threads: int | None = None
    temp_dir: Path | None = None


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
        ConfigError: settings are invalid.
        MalformedInputError: the input cannot be read as clean tabular data.
        UserCodeError: ``transform_sql`` failed.
    """
    _validate(settings)
    import duckdb  # noqa: PLC0415 -- lazy: `dsjob --help` must not pay for DuckDB

    started = time.monotonic()
    output_dir.mkdir(parents=True, exist_ok=True)
    own_temp = settings.temp_dir is None
    if settings.temp_dir is None:
        temp_dir = _private_spill_dir(input_path.parent)
    else:
        temp_dir = settings.temp_dir
        temp_dir.mkdir(parents=True, exist_ok=True)
    try:
        with duckdb.connect(config=_connection_config(settings, temp_dir)) as con:
            # A session option (not accepted in the connect-time config).
            con.execute("SET enable_progress_bar = false")
            result = _Step(con, input_path, output_dir, settings).run()
    except duckdb.Error as error:
        raise _translate(error) from None
    finally:
        if own_temp:
            shutil.rmtree(temp_dir, ignore_errors=True)
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


def _validate(settings: ProcessSettings) -> None:
    """Collect every settings problem and raise them together."""
    problems = []
    unknown = sorted(set(settings.output_formats) - set(OUTPUT_FORMATS))
    if unknown or not settings.output_formats:
        problems.append(f"output formats must be a non-empty subset of {OUTPUT_FORMATS}")
    if settings.on_bad_rows not in BAD_ROW_POLICIES:
        problems.append(f"on-bad-rows must be one of {BAD_ROW_POLICIES}")
    if settings.threads is not None and settings.threads < 1:
        problems.append("threads must be >= 1")
    if not settings.dataset or "/" in settings.dataset or settings.dataset.startswith("."):
        problems.append(f"dataset must be a plain file stem, got {settings.dataset!r}")
    if not settings.id_column:
        problems.append("id column must not be empty")
    if problems:
        raise ConfigError("; ".join(problems))


def _connection_config(settings: ProcessSettings, temp_dir: Path) -> dict[str, Any]:
    """DuckDB settings: bounded memory, spill directory, no order preservation."""
    return {
        "memory_limit": settings.memory_limit or f"{default_memory_limit() // 1024**2}MB",
        "threads": settings.threads or default_threads(),
        "temp_directory": str(temp_dir),
        # Order is not part of the contract; dropping it lets DISTINCT and the
        # Parquet writer stream and spill instead of buffering for ordering.
        "preserve_insertion_order": False,
        # The step reads exactly one local file and writes its output dir.
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }


def default_memory_limit() -> int:
    """Bytes DuckDB may use: the cgroup or RAM limit minus headroom (never below 128 MiB)."""
    total = _cgroup_memory_limit() or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(_MIN_MEMORY_BYTES, min(int(total * 0.75), total - _HEADROOM_BYTES))


def _cgroup_memory_limit() -> int | None:
    """The container's memory limit (cgroup v2, then v1), or None when unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text(encoding="ascii").strip()
        except OSError:
            continue
        # cgroup v1 reports "unlimited" as a huge number near 2**63.
        if raw.isdigit() and int(raw) < 2**60:
            return int(raw)
    return None


def default_threads() -> int:
    """CPUs this process may use: the cgroup CPU quota, else the affinity mask."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()
        if quota != "max":
            return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Step:
    """One run of the step on one connection (keeps the helper signatures short)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        input_path: Path,
        output_dir: Path,
        settings: ProcessSettings,
    ) -> None:
        self.con = con
        self.input_path = input_path
        self.output_dir = output_dir
        self.settings = settings
        self.skip_bad = settings.on_bad_rows == "skip"
        self.is_parquet = _is_parquet(input_path)
        self.query = ""

    def source(self, *, rejects: bool = False) -> str:
        """The table function that reads the input."""
        path = _quote_str(str(self.input_path))
        if self.is_parquet:
            return f"read_parquet({path})"
        opts = "delim = ',', quote = '\"', escape = '\"', header = true, encoding = 'utf-8'"
        if rejects:
            opts += ", store_rejects = true"
        elif self.skip_bad:
            opts += ", ignore_errors = true"
        return f"read_csv({path}, {opts})"

    def run(self) -> ProcessResult:
        if not self.is_parquet:
            _check_not_empty(self.input_path)
        columns = self.describe()
        select, sampled = self.clean_select(columns)
        if sampled == 0 and not self.skip_bad:
            raise self.no_rows()
        # Counting rows in (and NULL ids) needs its own scan; it runs beside the main
        # query on a second cursor, soaking up the core the dedup leaves idle while
        # it spills, instead of adding a serial pass.
        counter_con = self.con.cursor()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsjob-count") as pool:
            counting = pool.submit(self.count, counter_con, columns)
            try:
                files, rows_out, deduped = self.produce(select, columns)
            except BaseException:
                counter_con.interrupt()
                raise
            rows_in, null_ids, malformed = counting.result()
        if rows_in - malformed == 0:
            for path in files:
                path.unlink(missing_ok=True)
            raise self.no_rows()
        schema = self.con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({_quote_str(str(files[0]))})"
            if files[0].suffix == ".parquet"
            else f"DESCRIBE {self.query}"
        ).fetchall()
        kept = rows_out if deduped is None else deduped
        return ProcessResult(
            rows_in=rows_in,
            rows_out=rows_out,
            dropped={
                "null_id": null_ids,
                "duplicate": rows_in - malformed - null_ids - kept,
                "malformed": malformed,
            },
            files=files,
            columns={str(row[0]): str(row[1]) for row in schema},
        )

    def no_rows(self) -> MalformedInputError:
        """The error for input without a single data row."""
        if self.is_parquet:
            return MalformedInputError(f"{self.input_path.name}: no rows")
        return MalformedInputError(
            f"{self.input_path.name}: header only, no data rows (line 2 is missing"
            + (" or every row is malformed)" if self.skip_bad else ")")
        )

    def produce(
        self, select: str, columns: dict[str, str]
    ) -> tuple[tuple[Path, ...], int, int | None]:
        """Deduplicate (and transform) into the output files; returns files, rows, deduped."""
        id_filter = (
            f"WHERE {_quote_ident(self.settings.id_column)} IS NOT NULL"
            if self.settings.id_column in columns
            else ""
        )
        cleaned = f"SELECT DISTINCT * FROM ({select}) {id_filter}"
        if self.settings.transform_sql is None:
            files, rows_out = self.write(cleaned)
            return files, rows_out, None
        # Materialised once: counted for the manifest, then read by the transform.
        self.con.execute(f"CREATE TEMP TABLE dsjob_clean AS {cleaned}")
        deduped = self.scalar("SELECT count(*) FROM dsjob_clean")
        self.con.execute("CREATE TEMP VIEW input AS SELECT * FROM dsjob_clean")
        query = self.settings.transform_sql.strip().rstrip(";")
        self.check_transform(query)
        # The transform is the user's logic: an ORDER BY in it must hold in the file.
        self.con.execute("SET preserve_insertion_order = true")
        files, rows_out = self.write(query)
        return files, rows_out, deduped

    def scalar(self, sql: str, con: duckdb.DuckDBPyConnection | None = None) -> int:
        rows = (con or self.con).execute(sql).fetchall()
        row = rows[0] if rows else None
        return int(row[0]) if row and row[0] is not None else 0

    def describe(self) -> dict[str, str]:
        """Column name -> type as DuckDB's sniffer sees the raw input."""
        import duckdb  # noqa: PLC0415

        try:
            rows = self.con.execute(f"DESCRIBE SELECT * FROM {self.source()}").fetchall()
        except duckdb.InvalidInputException as error:
            if self.is_parquet or "sniffing" not in str(error):
                raise
            # The sniffer only says "could not detect the dialect"; a plain
            # strict read with the header's columns names the offending line.
            self.locate_bad_line()
            raise
        return {str(r[0]): str(r[1]) for r in rows}

    def locate_bad_line(self) -> None:
        """Re-read with no detection so DuckDB reports the first bad line."""
        names = _header_names(self.input_path)
        if not names:
            return
        spec = ", ".join(f"{_quote_str(str(n))}: 'VARCHAR'" for n in names)
        self.con.execute(
            f"SELECT count(*) FROM read_csv({_quote_str(str(self.input_path))}, delim = ',', "
            f"quote = '\"', escape = '\"', header = true, auto_detect = false, "
            f"columns = {{{spec}}})"
        ).fetchall()

    def clean_select(self, columns: dict[str, str]) -> tuple[str, int]:
        """SELECT that trims strings, NULLs empties and re-types trimmed strings; rows sampled."""
        strings = [name for name, kind in columns.items() if kind == "VARCHAR"]
        retype, sampled = self.infer_trimmed(strings)
        exprs = []
        for name, kind in columns.items():
            q = _quote_ident(name)
            if kind != "VARCHAR":
                exprs.append(q)
            elif name in retype:
                exprs.append(f"CAST(NULLIF(trim({q}), '') AS {retype[name]}) AS {q}")
            else:
                exprs.append(f"NULLIF(trim({q}), '') AS {q}")
        return f"SELECT {', '.join(exprs)} FROM {self.source()}", sampled

    def infer_trimmed(self, strings: list[str]) -> tuple[dict[str, str], int]:
        """Narrower types for string columns whose trimmed sample values all cast; rows sampled."""
        aggs = ["count(*) AS sampled"]
        for i, name in enumerate(strings):
            v = f"NULLIF(trim({_quote_ident(name)}), '')"
            aggs.append(f"count({v}) AS n{i}")
            aggs.extend(
                f"count({_try_cast(v, t)}) AS n{i}_{j}" for j, t in enumerate(_CANDIDATE_TYPES)
            )
        row = self.con.execute(
            f"SELECT {', '.join(aggs)} FROM (SELECT * FROM {self.source()} LIMIT {SAMPLE_ROWS})"
        ).fetchall()[0]
        width = 1 + len(_CANDIDATE_TYPES)
        retype = {}
        for i, name in enumerate(strings):
            total, *casts = row[1 + i * width : 1 + (i + 1) * width]
            for kind, ok in zip(_CANDIDATE_TYPES, casts, strict=True):
                if total and ok == total:
                    retype[name] = kind
                    break
        if retype:
            LOGGER.info("types inferred after trimming", extra={"columns": retype})
        return retype, int(row[0])

    def count(
        self, con: duckdb.DuckDBPyConnection, columns: dict[str, str]
    ) -> tuple[int, int, int]:
        """Rows in, rows with a NULL id and malformed rows, in one cheap scan on ``con``."""
        id_col = self.settings.id_column
        if id_col in columns:
            q = _quote_ident(id_col)
            null_test = (
                f"NULLIF(trim({q}), '') IS NULL"
                if columns[id_col] == "VARCHAR"
                else (f"{q} IS NULL")
            )
            nulls = f"count(*) FILTER (WHERE {null_test})"
        else:
            nulls = "0"
        if self.is_parquet:
            row = con.execute(f"SELECT count(*), {nulls} FROM {self.source()}").fetchall()[0]
            return (int(row[0]), int(row[1]), 0) if row else (0, 0, 0)
        row = con.execute(
            f"SELECT count(*), {nulls} FROM {self.source(rejects=self.skip_bad)}"
        ).fetchall()[0]
        good, null_ids = (int(row[0]), int(row[1])) if row else (0, 0)
        malformed = (
            self.scalar("SELECT count(DISTINCT (scan_id, line)) FROM reject_errors", con)
            if self.skip_bad
            else 0
        )
        if malformed:
            LOGGER.warning("skipped malformed rows", extra={"malformed": malformed})
        return good + malformed, null_ids, malformed

    def check_transform(self, query: str) -> None:
        """Bind the transform once up front so SQL mistakes are reported as such."""
        import duckdb  # noqa: PLC0415

        try:
            self.con.execute(f"DESCRIBE {query}").fetchall()
        except duckdb.Error as error:
            raise UserCodeError(f"transform.sql failed: {_first_line(error)}") from None

    def write(self, query: str) -> tuple[tuple[Path, ...], int]:
        """Write the query's result in every requested format; returns files and row count."""
        self.query = query
        files: list[Path] = []
        rows_out = 0
        formats = sorted(self.settings.output_formats, key=OUTPUT_FORMATS.index)
        source = f"({query})"
        for fmt in formats:
            target = self.output_dir / f"{self.settings.dataset}.{fmt}"
            options = (
                "FORMAT parquet, COMPRESSION zstd"
                if fmt == "parquet"
                else "FORMAT csv, HEADER true, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S'"
            )
            row = self.con.execute(
                f"COPY {source} TO {_quote_str(str(target))} ({options})"
            ).fetchall()[0]
            rows_out = int(row[0]) if row else 0
            files.append(target)
            # Further formats convert the Parquet just written, in its order: no second dedup.
            self.con.execute("SET preserve_insertion_order = true")
            source = f"(SELECT * FROM read_parquet({_quote_str(str(target))}))"
        return tuple(files), rows_out


def _try_cast(value: str, kind: str) -> str:
    """TRY_CAST, but integers must look like integers (DuckDB rounds '2.5' to 3)."""
    if kind == "BIGINT":
        integer = f"regexp_full_match({value}, '[+-]?[0-9]+')"
        return f"CASE WHEN {integer} THEN TRY_CAST({value} AS BIGINT) END"
    return f"TRY_CAST({value} AS {kind})"


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
        first = handle.readline(1024 * 1024)
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
        return DsjobError(
            f"DuckDB ran out of memory ({_first_line(error)}); raise memory-limit or the "
            "container's memory, or free space in the spill directory"
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
