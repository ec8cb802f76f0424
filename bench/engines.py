"""The engines the benchmark compares, each run in its own process by bench/run.py.

    python bench/engines.py ENGINE INPUT OUTPUT_DIR

prints one JSON line ``{"rows_out": N, "seconds": S}``. The parent measures
wall time and the child's peak RSS (``os.wait4``), so nothing here times itself
beyond the in-process seconds it reports for reference.

Engines (same cleaning semantics, so output row counts must match):

* ``builtin`` -- ``dsjob.processing.run_builtin`` with its defaults (memory
  limit derived from this machine's RAM).
* ``builtin-512m`` -- the same with the memory limit it derives inside a
  512 MiB container (``memory_limit`` 312 MB), to show the bounded cost.
* ``pandas`` -- the reference design's way: read the whole CSV, strip strings,
  empty -> NULL, drop NULL ids and duplicates, ``to_parquet`` (zstd, pyarrow).
* ``polars`` -- ``scan_csv -> clean -> unique -> sink_parquet`` (streaming).
* ``<design>-512m`` -- one of bench/designs.py's dedup designs (``distinct``,
  ``fp-stage``, ``fp-reparse``, ``fp-pqstage``, ``parse-only``, ...) at the same
  312 MB limit.

The JSON line also carries ``digest``: row count and the sum of the rows'
hashes, a multiset fingerprint that the report compares across the DuckDB-based
engines (same types) to show each design's output is exact.
"""

# Each engine imports its library inside its function so the others' import cost
# and memory never land in its measurement.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ID = "id"
DESIGNS = (
    "distinct",
    "fp-stage",
    "fp-reparse",
    "fp-pqstage",
    "parse-only",
    "distinct-zstd1",
    "parse-native",
    "group-count",
    "distinct-and-count",
)


def run_builtin(src: Path, out: Path, memory_limit: str | None = None) -> int:
    """The dsjob built-in step."""
    from dsjob.processing import ProcessSettings
    from dsjob.processing import run_builtin as step

    return step(src, out, ProcessSettings(memory_limit=memory_limit)).rows_out


def run_pandas(src: Path, out: Path) -> int:
    """Everything in memory, as the reference design does."""
    import pandas as pd

    frame = pd.read_csv(src)
    for column in frame.select_dtypes(include=["object", "string"]).columns:
        stripped = frame[column].str.strip()
        frame[column] = stripped.mask(stripped == "")
    frame = frame.dropna(subset=[ID]).drop_duplicates()
    frame.to_parquet(out / "data.parquet", compression="zstd", index=False)
    return len(frame)


def run_polars(src: Path, out: Path) -> int:
    """Polars' streaming engine: lazy scan, clean, unique, sink."""
    import polars as pl
    import polars.selectors as cs

    lazy = (
        pl.scan_csv(src, try_parse_dates=True)
        .with_columns(cs.string().str.strip_chars())
        .with_columns(cs.string().replace("", None))
        .filter(pl.col(ID).is_not_null())
        .unique()
    )
    target = out / "data.parquet"
    lazy.sink_parquet(target, compression="zstd")
    return int(pl.scan_parquet(target).select(pl.len()).collect().item())


def digest(out: Path) -> str:
    """Rows and the sum of every row's hash: equal for equal multisets of rows."""
    import duckdb

    target = str(out / "data.parquet").replace("'", "''")
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT count(*), sum(hash(t)::HUGEINT) FROM read_parquet('{target}') t"  # noqa: S608
        ).fetchall()
    return f"{rows[0][0]}:{rows[0][1]}"


def run_design(name: str, src: Path, out: Path) -> int:
    """One of bench/designs.py's dedup designs under the 512 MiB container's limit."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import designs

    return designs.run(name, src, out, "312MB")


def main(argv: list[str]) -> int:
    """Run one engine on one file and print its JSON result line."""
    engine, src, out = argv[0], Path(argv[1]), Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if engine == "builtin":
        rows = run_builtin(src, out)
    elif engine == "builtin-512m":
        rows = run_builtin(src, out, "312MB")
    elif engine == "pandas":
        rows = run_pandas(src, out)
    elif engine == "polars":
        rows = run_polars(src, out)
    elif engine.endswith("-512m") and engine.removesuffix("-512m") in DESIGNS:
        rows = run_design(engine.removesuffix("-512m"), src, out)
    else:
        print(f"unknown engine {engine!r}", file=sys.stderr)
        return 2
    seconds = round(time.perf_counter() - started, 3)
    print(json.dumps({"rows_out": rows, "seconds": seconds, "digest": digest(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
