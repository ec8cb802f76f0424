"""The DuckDB half of the fan-out: clean and hash-partition one object (map), dedup one partition.

**The typing rule** (why the fan-out equals one run over the concatenated input):

1. *map* cleans an object with the built-in step's own code
   (:mod:`dsjob.processing`: the same sniffer, trimming, type re-inference after
   trimming, NULL-id filter and bad-row policy), then stores every value as the
   **canonical text of its typed value** (``CAST(col AS VARCHAR)``: ``" 007 "``
   in a BIGINT column becomes ``"7"``, a DATE in whatever format the sniffer
   read becomes ``"2024-01-31"``). The object's inferred type and its count of
   non-NULL values per column go into the map record.
2. *reduce* decides one type per column from every map record
   (:func:`global_types`): the type every object with values in that column
   agrees on; BIGINT with DOUBLE widens to DOUBLE, DATE with TIMESTAMP to
   TIMESTAMP, any other disagreement to VARCHAR (the canonical text as is).
   Objects with no value in a column do not vote, as they do not in a single
   run's inference. Every reduce task reads the same records, so every part
   has the same schema. It casts the text back and deduplicates on the typed
   values: canonical text round-trips exactly, so the rows equal the single run's.
3. The partition of a row is ``hash(k(col1), k(col2), ...) % P`` over the
   cleaned canonical text, in a SELECT wrapping the cleaning SELECT. ``k``
   maps numbers to their DOUBLE value and temporals to their date, so rows that
   are equal after *any* of the widenings above (``"7"`` from a BIGINT object,
   ``"7.0"`` from a DOUBLE one; ``-0.0`` and ``0.0``) share a partition. ``k``
   may put unequal rows together, never equal rows apart: that is all exact
   dedup needs.

A value that misfits its object's inferred type re-types the column VARCHAR
(:func:`dsjob.processing.with_retyping`), so that object votes VARCHAR and the
run's column is VARCHAR, as in a single run that meets the same value.

Where it can differ from a single run: only when objects disagree on a
column's type *and* a single run's type sample (its first
:data:`~dsjob.processing.SAMPLE_ROWS` rows) sees one kind only. Integers in
the sample and decimals later make that single run's column VARCHAR; here it
is DOUBLE, which is what a single run says when its sample sees both. Inputs
under the sample size (every row is sampled) match exactly, as the
integration test shows. Malformed rows (ragged, bad UTF-8) are dropped and
counted per object exactly as the single run counts them.
"""

# SQL text is this module's product: identifiers and literals go through
# processing's quoting helpers, never raw user strings.
# ruff: noqa: S608, SLF001

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsjob import processing
from dsjob.errors import MalformedInputError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from contextlib import AbstractContextManager
    from pathlib import Path

    import duckdb

PART_COLUMN = "dsjob_part"
_WIDENINGS = {
    frozenset({"BIGINT", "DOUBLE"}): "DOUBLE",
    frozenset({"DATE", "TIMESTAMP"}): "TIMESTAMP",
}


@dataclass(frozen=True)
class MapOutput:
    """One object, cleaned and partitioned: counts, types, a file per non-empty partition."""

    rows_in: int
    rows: int  # rows written (after dropping NULL ids and malformed rows)
    dropped: dict[str, int]
    types: dict[str, str]  # column -> the type this object inferred, in header order
    non_null: dict[str, int]
    files: dict[int, tuple[Path, int]]  # partition -> (file, rows)


def partition_key(column_sql: str) -> str:
    """The per-column hash input: equal after any widening of `global_types` implies equal here."""
    # + 0.0 turns -0.0 into 0.0 (IEEE 754), which DISTINCT treats as equal.
    return (
        f"COALESCE(CAST(TRY_CAST({column_sql} AS DOUBLE) + 0.0 AS VARCHAR), "
        f"CAST(TRY_CAST({column_sql} AS DATE) AS VARCHAR), {column_sql})"
    )


def _translated() -> AbstractContextManager[None]:
    """DuckDB errors become the built-in step's dsjob errors."""
    import contextlib  # noqa: PLC0415

    import duckdb  # noqa: PLC0415

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except duckdb.Error as error:
            raise processing._translate(error) from None

    return guard()


def map_object(
    input_path: Path, work: Path, settings: processing.ProcessSettings, partitions: int
) -> MapOutput:
    """Clean `input_path` as the built-in step does and split its rows into `partitions` files.

    Args:
        input_path: one CSV or Parquet object, downloaded.
        work: an empty scratch directory (partition files are written under it).
        settings: the built-in step's settings (id column, bad-row policy, memory, threads).
        partitions: P; a row goes to ``hash(...) % P``.
    """
    out, spill = work / "parts", work / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    with _translated(), processing.connect(settings, spill) as con:
        found = processing.sniff_and_clean(con, input_path, settings)
        counts = processing.count_rows(con.cursor(), found)
        rows_in, null_ids, malformed = counts.rows_in, counts.null_id, counts.malformed
        if rows_in - malformed == 0:
            raise processing._no_rows(found)

        def split(cleaned: processing.Cleaned) -> dict[str, str]:
            shutil.rmtree(out, ignore_errors=True)
            q = processing._quote_ident
            texts = ", ".join(f"CAST({q(c)} AS VARCHAR) AS {q(c)}" for c in cleaned.types)
            keys = ", ".join(partition_key(q(c)) for c in cleaned.types)
            # The hash reads the cleaned text from the SELECT below it, never the raw column.
            text = f"SELECT {texts} FROM ({cleaned.kept()})"
            hashed = f"SELECT *, hash({keys}) % {partitions} AS {PART_COLUMN} FROM ({text})"
            con.execute(
                f"COPY ({hashed}) TO {processing._quote_str(str(out))} "
                f"(FORMAT parquet, COMPRESSION zstd, PARTITION_BY ({PART_COLUMN}))"
            )
            processing.check_misfits(con, cleaned)
            return dict(cleaned.types)

        types = processing.with_retyping(con, found, split)
        files, non_null = _collect_parts(con, out, list(types))
    rows = sum(n for _, n in files.values())
    dropped = {"null_id": null_ids, "malformed": malformed}
    if rows != rows_in - malformed - null_ids:  # pragma: no cover - a DuckDB bug, not an input
        msg = f"map wrote {rows} rows, expected {rows_in - malformed - null_ids}"
        raise RuntimeError(msg)
    shutil.rmtree(spill, ignore_errors=True)
    return MapOutput(rows_in, rows, dropped, types, non_null, files)


def _collect_parts(
    con: duckdb.DuckDBPyConnection, out: Path, names: list[str]
) -> tuple[dict[int, tuple[Path, int]], dict[str, int]]:
    """One file per partition (merging if DuckDB split one), rows per file, non-NULLs per column."""
    q, s = processing._quote_ident, processing._quote_str
    files: dict[int, tuple[Path, int]] = {}
    non_null = dict.fromkeys(names, 0)
    for folder in sorted(out.glob(f"{PART_COLUMN}=*")):
        k = int(folder.name.split("=", 1)[1])
        pieces = sorted(folder.glob("*.parquet"))
        target = out / f"part-{k}.parquet"
        source = (
            f"read_parquet([{', '.join(s(str(p)) for p in pieces)}], hive_partitioning = false)"
        )
        if len(pieces) == 1:
            pieces[0].rename(target)
        else:
            con.execute(
                f"COPY (SELECT * FROM {source}) TO {s(str(target))} "
                "(FORMAT parquet, COMPRESSION zstd)"
            )
        counts = con.execute(
            f"SELECT count(*), {', '.join(f'count({q(c)})' for c in names)} "
            f"FROM read_parquet({s(str(target))}, hive_partitioning = false)"
        ).fetchall()[0]
        files[k] = (target, int(counts[0]))
        for name, n in zip(names, counts[1:], strict=True):
            non_null[name] += int(n)
        shutil.rmtree(folder)
    return files, non_null


def global_types(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One type per column from every map record (see the module docstring for the rule).

    Args:
        records: map records with ``source``, ``types`` (column -> type, header order)
            and ``non_null`` (column -> count).

    Raises:
        MalformedInputError: two objects do not have the same columns in the same order.
    """
    first = records[0]
    names = list(first["types"])
    for record in records[1:]:
        if list(record["types"]) != names:
            msg = (
                f"{record['source']} has columns {list(record['types'])}, but "
                f"{first['source']} has {names}: every object of a fan-out needs the same header"
            )
            raise MalformedInputError(msg)
    result = {}
    for name in names:
        voting = {r["types"][name] for r in records if r["non_null"].get(name, 0) > 0}
        everyone = {r["types"][name] for r in records}
        if not voting:
            voting = everyone if len(everyone) == 1 else {"VARCHAR"}
        if len(voting) == 1:
            result[name] = voting.pop()
        else:
            result[name] = _WIDENINGS.get(frozenset(voting), "VARCHAR")
    return result


def reduce_partition(
    files: Sequence[Path],
    types: dict[str, str],
    target_stem: Path,
    settings: processing.ProcessSettings,
) -> tuple[tuple[Path, ...], int]:
    """Deduplicate one partition's map files into ``<target_stem>.<fmt>``; returns files and rows.

    Args:
        files: this partition's map files (canonical text, identical columns).
        types: the run's column types (:func:`global_types`).
        target_stem: output path without extension; its folder is also the spill dir's parent.
        settings: memory, threads and output formats.
    """
    q, s = processing._quote_ident, processing._quote_str
    spill = target_stem.parent / "spill"
    spill.mkdir(parents=True, exist_ok=True)
    casts = ", ".join(f"CAST({q(c)} AS {t}) AS {q(c)}" for c, t in types.items())
    source = f"read_parquet([{', '.join(s(str(p)) for p in files)}], hive_partitioning = false)"
    query = f"SELECT DISTINCT {casts} FROM {source}"
    written: list[Path] = []
    rows = 0
    with _translated(), processing.connect(settings, spill) as con:
        for fmt in sorted(settings.output_formats, key=processing.OUTPUT_FORMATS.index):
            target = target_stem.with_name(f"{target_stem.name}.{fmt}")
            options = (
                "FORMAT parquet, COMPRESSION zstd"
                if fmt == "parquet"
                else "FORMAT csv, HEADER true, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S'"
            )
            row = con.execute(f"COPY ({query}) TO {s(str(target))} ({options})").fetchall()[0]
            rows = int(row[0]) if row else 0
            written.append(target)
            # Further formats convert the file just written: no second dedup.
            query = f"SELECT * FROM read_parquet({s(str(target))})"
    shutil.rmtree(spill, ignore_errors=True)
    return tuple(written), rows
