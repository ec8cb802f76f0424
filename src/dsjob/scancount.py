"""The step's counts: from DuckDB's profile of the query that scanned the input, else a scan.

The main query (dedup + write) already reads every row of a CSV input. With
DuckDB's profiler on (no output, only per-operator row counts tracked), the
plan after the query says how many rows the CSV scan produced and how many
passed the NULL-id filter right above it, so ``rows_in`` and ``null_id`` come
for free instead of from a second scan of the file. Malformed rows (skip mode)
come from the same scan's reject table.

The plan shape is checked, not assumed: exactly one CSV scan, at most
cardinality-preserving projections between it and the one filter above it, and
that filter is an ``IS NOT NULL`` test naming no other column. Any other shape
(a DuckDB version that pushes the filter into the scan, say) gives ``None`` and
:class:`StepCounter` counts with :func:`count_rows`, one cheap scan.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsjob.sqltext import _quote_ident, _scalar

if TYPE_CHECKING:
    from collections.abc import Callable

    import duckdb

    from dsjob.inference import Cleaned

LOGGER = logging.getLogger(__name__)

#: Only what the counts need, so the profiler adds no timing work per operator.
_METRICS = "['operator.intermediate_rows', 'operator.type', 'operator.extra_info']"


def enable(con: duckdb.DuckDBPyConnection) -> None:
    """Profile every following query on ``con`` (COPY and CREATE included), printing nothing."""
    con.execute("SET profiling_coverage = 'ALL'")
    con.execute("SET enable_profiling = 'no_output'")
    con.execute(f"SET tracked_metrics = {_METRICS}")


def disable(con: duckdb.DuckDBPyConnection) -> None:
    """Turn the profiler off again (the transform's query is not worth profiling)."""
    con.execute("SET enable_profiling = 'no_output'")
    con.execute("RESET enable_profiling")


def from_last_query(con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> tuple[int, int] | None:
    """(rows the CSV scan produced, rows that passed the NULL-id filter) of the last query.

    None when profiling was off or the plan does not have the checked shape.
    """
    try:
        profile = json.loads(con.get_profiling_information())
    except (ValueError, RuntimeError):
        return None
    paths = [path for root in profile.get("operator", []) for path in _scan_paths(root, [])]
    if len(paths) != 1:
        return None
    path = paths[0]
    scanned = _rows(path[-1])
    filters = [i for i, node in enumerate(path) if node.get("type") == "FILTER"]
    if cleaned.id_column is None:
        return (scanned, scanned) if not filters else None
    if len(filters) != 1:
        return None
    at = filters[0]
    expression = str(path[at].get("extra_info", {}).get("Expression", ""))
    between = path[at + 1 : -1]
    if not _is_null_id_test(expression, cleaned) or any(
        node.get("type") != "PROJECTION" or _rows(node) != scanned for node in between
    ):
        return None
    return scanned, _rows(path[at])


def _is_null_id_test(expression: str, cleaned: Cleaned) -> bool:
    """Whether a FILTER's rendered expression is only the NULL-id test (no other conjunct)."""
    if not expression.endswith("IS NOT NULL)"):
        return False
    return not any(
        re.search(rf'(?<![\w"]){re.escape(name)}(?![\w"])', expression)
        for name in cleaned.types
        if name != cleaned.id_column
    )


def malformed(con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> int:
    """Rows the last scan rejected as malformed (skip mode), from DuckDB's reject table."""
    if not cleaned.skip_bad:
        return 0
    return _scalar(con, "SELECT count(DISTINCT (scan_id, line)) FROM reject_errors")


def _scan_paths(node: dict[str, Any], above: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Root-to-node paths ending in a CSV table scan."""
    path = [*above, node]
    found = []
    if node.get("type") == "TABLE_SCAN" and "READ_CSV" in str(node.get("extra_info", {})):
        found.append(path)
    for child in node.get("children", []):
        found += _scan_paths(child, path)
    return found


def _rows(node: dict[str, Any]) -> int:
    return int(node.get("intermediate_rows", -1))


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


class StepCounter:
    """The step's counts: from the profile of the query that read a CSV, else a counting scan.

    :func:`dedup_and_write` calls :meth:`scanned` right after its query over the
    input; calling the counter then gives :class:`Counts` (computed once). When the
    profile holds no usable counts, a counting scan (``pending``, a background one
    already running, or :func:`count_rows` on a new cursor) gives them instead.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        """Args: con: the step's connection."""
        self.con = con
        self.pending: Callable[[], Counts] | None = None
        self._scan: tuple[int, int] | None = None
        self._cleaned: Cleaned | None = None
        self._found: Counts | None = None

    def scanned(self, con: duckdb.DuckDBPyConnection, cleaned: Cleaned) -> None:
        """Read the scan's counts from the profile of the query just run on ``con``."""
        self._cleaned = cleaned
        self._scan = None if cleaned.is_parquet else from_last_query(con, cleaned)

    def __call__(self) -> Counts:
        """Rows in, NULL ids and malformed rows of the input, as the last scan saw them."""
        if self._found is None:
            self._found = self._count()
        return self._found

    def _count(self) -> Counts:
        if self.pending is not None:
            return self.pending()
        if self._cleaned is None:
            raise RuntimeError("StepCounter called before the input was scanned")
        if self._scan is None:
            LOGGER.debug("no counts in the query profile; counting with a second scan")
            return count_rows(self.con.cursor(), self._cleaned)
        rows, valid = self._scan
        rejected = malformed(self.con, self._cleaned)
        if rejected:
            LOGGER.warning("skipped malformed rows", extra={"malformed": rejected})
        return Counts(rows_in=rows + rejected, null_id=rows - valid, malformed=rejected)


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
    # The column is quoted and the source is built by Cleaned: no user text goes in raw.
    query = f"SELECT count(*), {nulls} FROM {cleaned.count_source()}"  # noqa: S608
    row = con.execute(query).fetchall()
    good, null_ids = (int(row[0][0]), int(row[0][1])) if row else (0, 0)
    rejected = (
        _scalar(con, "SELECT count(DISTINCT (scan_id, line)) FROM reject_errors") if rejects else 0
    )
    if rejected:
        LOGGER.warning("skipped malformed rows", extra={"malformed": rejected})
    return Counts(rows_in=good + rejected, null_id=null_ids, malformed=rejected)
