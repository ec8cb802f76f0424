"""Cleaning helpers the example script imports with `from package.preprocessing import ...`."""

from __future__ import annotations

import logging

import pandas as pd

LOGGER = logging.getLogger(__name__)


def strip_strings(df: pd.DataFrame) -> pd.DataFrame:
    """Trim whitespace in every text column and turn empty strings into missing values."""
    out = df.copy()
    for column in out.columns:
        if pd.api.types.is_string_dtype(out[column]) or out[column].dtype == object:
            stripped = out[column].str.strip()
            out[column] = stripped.mask(stripped == "")
    return out


def drop_bad_rows(df: pd.DataFrame, id_column: str = "id") -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows without an id, then exact duplicate rows; return the rest and the counts.

    Args:
        df: the input rows.
        id_column: the column that must not be empty (skipped when the input has none).
    """
    dropped: dict[str, int] = {}
    if id_column in df.columns:
        keep = df[id_column].notna()
        dropped["null_id"] = int((~keep).sum())
        df = df[keep]
    before = len(df)
    df = df.drop_duplicates()
    dropped["duplicate"] = before - len(df)
    return df.reset_index(drop=True), dropped


def add_derived_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``full_name`` and ``joined_year`` where their source columns exist."""
    out = df.copy()
    if {"first_name", "last_name"} <= set(out.columns):
        out["full_name"] = out["first_name"].fillna("") + " " + out["last_name"].fillna("")
        out["full_name"] = out["full_name"].str.strip()
    if "joined_at" in out.columns:
        joined = pd.to_datetime(out["joined_at"], errors="coerce")
        out["joined_year"] = joined.dt.year.astype("Int64")
    return out
