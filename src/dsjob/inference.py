"""Cleaned column types: trimmed-sample inference and re-typing a column a value misfits."""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

from dsjob.errors import MalformedInputError
from dsjob.sniffing import (
    _check_not_empty,
    _check_width,
    _describe,
    _header_names,
    _is_parquet,
    _source,
)
from dsjob.sqltext import _quote_ident, _scalar

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import duckdb

    from dsjob.processing import ProcessSettings

# The step's modules log under one name, as they did when they were one module.
LOGGER = logging.getLogger("dsjob.processing")
_T = TypeVar("_T")


#: Rows the type inference looks at (from the start of the input).
SAMPLE_ROWS = 20_480
#: From this width on, DuckDB's common-subexpression pass (quadratic in the number
#: of expressions, and useless for the cleaning query's shape) is switched off.
_WIDE = 100
#: Types tried, in order, for a string column whose trimmed sample all casts.
_CANDIDATE_TYPES = ("BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN")
#: Raised (via DuckDB's error()) by the cleaning query when a value does not fit
#: its column's inferred type; carries the column's index.
_MISFIT = "dsjob-misfit:"


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
            trimmed.append(f"{clean_text(q)} AS {q}" if raw == "VARCHAR" else q)
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


def clean_text(q: str) -> str:
    """SQL for ``NULLIF(trim(q), '')`` that skips trim's string copy where trim changes nothing.

    DuckDB's ``trim`` strips Unicode space separators (category Zs) from both ends
    and always builds a new string. In pure-ASCII text (byte length = character
    length) the only Zs character is ``' '``, so a value with no space at either
    end is returned as it is; every other value goes through ``trim``. Same result,
    about a quarter of the step's cleaning CPU at 3 M rows (bench/results.md).
    """
    untouched = f"strlen({q}) = length({q}) AND NOT (starts_with({q}, ' ') OR ends_with({q}, ' '))"
    return f"CASE WHEN {untouched} THEN NULLIF({q}, '') ELSE NULLIF(trim({q}), '') END"


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
