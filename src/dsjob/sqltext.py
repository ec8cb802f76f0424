"""Quoting, one-number queries and DuckDB error translation for the built-in step."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from dsjob.errors import DsjobError, MalformedInputError, OutOfMemoryError

if TYPE_CHECKING:
    import duckdb


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


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
