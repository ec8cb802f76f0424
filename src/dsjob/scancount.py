"""The step's counts read from DuckDB's profile of the query that scanned the input.

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
the caller counts with a scan.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from dsjob.sqltext import _scalar

if TYPE_CHECKING:
    import duckdb

    from dsjob.inference import Cleaned

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
