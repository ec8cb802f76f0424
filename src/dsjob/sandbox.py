"""The transform sandbox: exactly one SELECT (by DuckDB's parser), file access locked off."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsjob.errors import UserCodeError
from dsjob.sqltext import _first_line, _quote_str

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb


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
