"""Reading the raw input: format detection, empty/width/header checks, the reader's types."""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

import csv
from typing import TYPE_CHECKING

from dsjob.errors import InputError, MalformedInputError
from dsjob.sqltext import _quote_str

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb


#: Widest input the step accepts: DuckDB's planning of the cleaning query grows
#: faster than linearly with width (about 2 s at 1,000 columns, 6 s at 2,000).
MAX_COLUMNS = 1_000
_PARQUET_MAGIC = b"PAR1"


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


def _check_width(width: int, path: Path) -> None:
    if width > MAX_COLUMNS:
        raise InputError(
            f"{path.name}: {width:,} columns; the built-in step handles at most "
            f"{MAX_COLUMNS:,} (use a script.py for wider data)"
        )


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
