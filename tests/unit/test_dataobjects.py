"""Tests for dsjob.dataobjects: which listed objects the fan-out maps and which it passes over."""

from __future__ import annotations

import pytest

from dsjob.dataobjects import not_data

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("key", "size", "reason"),
    [
        ("raw/2026-11/", 0, "folder marker"),
        # S3 keeps a marker's bytes if a tool wrote some; the trailing slash still marks it.
        ("raw/2026-11/", 12, "folder marker"),
        ("raw/2026-11/_SUCCESS", 0, "hidden name"),
        ("raw/2026-11/_SUCCESS", 16, "hidden name"),
        ("raw/2026-11/.part-0.csv.crc", 12, "hidden name"),
        ("_metadata", 40, "hidden name"),
        ("raw/2026-11/part-0.csv", 0, "zero-size object"),
        ("raw/2026-11/part-0.csv", 1, ""),
        # Only the last segment counts: a part under _temporary/ is data (the workflow agrees).
        ("raw/_temporary/0/part-1.csv", 5, ""),
        ("raw/x_SUCCESS.csv", 5, ""),
        ("raw/x.crc", 5, ""),
        ("part-0.csv", 5, ""),
    ],
)
def test_each_listed_object_is_data_or_named_why_not(key, size, reason):
    """A key and size give the one reason the fan-out skips it, or "" when it is mapped."""
    assert not_data(key, size) == reason
