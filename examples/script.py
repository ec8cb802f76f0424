"""Example custom step: clean the member list with pandas and write zstd Parquet.

`dsjob run` downloads this file and package.tar.gz, extracts the package into the
work dir (its cwd, on PYTHONPATH) and runs ``python script.py``; everything the
script needs comes from ``dsjob.context()``; ``context().report(...)`` puts its
counts into the run manifest and summary. Every file left in ``output_dir`` is
published. Locally (``--package`` takes the archive that ``dsjob pack`` builds)::

    dsjob sample -o data.csv
    dsjob pack examples --no-upload --out build/
    dsjob run --input data.csv --output-dir out/ \
        --script examples/script.py --package build/package.tar.gz
"""

from __future__ import annotations

import logging

import duckdb
import pandas as pd
from package.preprocessing import add_derived_columns, drop_bad_rows, strip_strings

import dsjob

LOGGER = logging.getLogger("script")


def read_input(ctx: dsjob.JobContext) -> pd.DataFrame:
    """Read the input as text columns (CSV) or as typed columns (Parquet, via DuckDB)."""
    if ctx.input_path.suffix.lower() == ".parquet":
        # The production image has no pyarrow; DuckDB reads Parquet without it.
        frame: pd.DataFrame = duckdb.read_parquet(str(ctx.input_path)).df()
        return frame
    return pd.read_csv(ctx.input_path, dtype=str, keep_default_na=False)


def main() -> None:
    """Read, clean, derive, write: one output file for the job to publish."""
    ctx = dsjob.context()
    df = read_input(ctx)
    rows_in = len(df)
    LOGGER.info("read %d rows from %s (run %s)", rows_in, ctx.input_path.name, ctx.run_id)
    df, dropped = drop_bad_rows(strip_strings(df))
    ctx.report(rows_in=rows_in, rows_out=len(df), dropped=dropped)
    df = add_derived_columns(df)
    if "id" in df.columns:
        df["id"] = pd.to_numeric(df["id"]).astype("Int64")
    out = ctx.output_dir / "members_clean.parquet"
    # pandas needs pyarrow for to_parquet; DuckDB (in the runtime) writes it instead.
    duckdb.from_df(df).write_parquet(str(out), compression="zstd")
    LOGGER.info("wrote %d rows to %s; dropped %s", len(df), out.name, dropped)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
