"""Checks of single configuration values: buckets, keys, prefixes, sizes, counts, durations."""

from __future__ import annotations

import logging

import duckdb
import pytest

from dsjob import validate

pytestmark = pytest.mark.unit

ARN = "arn:aws:s3:eu-west-1:123456789012:accesspoint/ap"


def duckdb_bytes(text: str) -> tuple[float, float]:
    """What DuckDB itself makes of a memory limit, and the step of how it shows it."""
    with duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{text}'")
        row = con.execute(
            "SELECT value FROM duckdb_settings() WHERE name = 'memory_limit'"
        ).fetchone()
    assert row is not None
    return _from_duckdb(str(row[0]))


def _from_duckdb(shown: str) -> tuple[float, float]:
    number, unit = shown.split()  # e.g. "1.3 GiB": one decimal of a binary unit, truncated
    scale = validate._UNITS[unit.lower()]
    return float(number) * scale, 0.1 * scale


@pytest.mark.parametrize(
    "text", ["1GB", "1 gb", "400M", "1.5GB", ".5GB", "1e3MB", "512MiB", "2GiB", " 3 megabytes "]
)
def test_sizes_agree_with_duckdb(text: str) -> None:
    """Every size parse_size accepts is one DuckDB accepts, to within DuckDB's display rounding."""
    theirs, step = duckdb_bytes(text)
    assert theirs <= validate.parse_size(text) < theirs + step


@pytest.mark.parametrize("text", ["lots", "1000", "1,5GB", "1PB", "1 kibibyte", "GB"])
def test_sizes_duckdb_refuses_are_refused(text: str) -> None:
    """A size DuckDB's parser refuses (no unit, unknown unit, no number) is refused here too."""
    with pytest.raises(ValueError, match=r"unit|number"):
        validate.parse_size(text)
    with duckdb.connect() as con, pytest.raises(duckdb.ParserException):
        con.execute(f"SET memory_limit = '{text}'")


def test_memory_limit_bounds() -> None:
    """A limit above the machine's memory, or below 64 MiB, or unlimited, is a problem."""
    problems: list[str] = []
    assert validate.memory_limit("400MB", problems) == "400MB"
    assert problems == []
    for text in ("999999999TB", "1MB", "-1", "none"):
        validate.memory_limit(text, problems)
    assert len(problems) == 4
    assert "is more than the" in problems[0]
    assert "below the minimum of 64MiB" in problems[1]


def test_percentage_is_of_the_memory_available() -> None:
    """`50%` is half of what the cgroup (or RAM) allows, as DuckDB computes it."""
    assert validate.parse_size("50%") == validate.memory_available() // 2
    with pytest.raises(ValueError, match="percentage"):
        validate.parse_size("150%")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("dsjob-output", "dsjob-output"),
        ("  dsjob-output ", "dsjob-output"),
        ("s3://dsjob-output", "dsjob-output"),
        ("S3://dsjob-output/", "dsjob-output"),
        (ARN, ARN),
    ],
)
def test_bucket_is_normalised(value: str, expected: str) -> None:
    """Blanks around, an s3:// scheme and a trailing slash are what users mean: they are dropped."""
    problems: list[str] = []
    assert validate.bucket("output-bucket", value, problems) == expected
    assert problems == []


@pytest.mark.parametrize("value", ["my bucket", "s3://b/key", "", "a\nb"])
def test_bad_bucket_is_a_problem_naming_it(value: str) -> None:
    """A value that is not a bucket name is one problem naming the parameter."""
    problems: list[str] = []
    validate.bucket("input-bucket", value, problems)
    assert len(problems) == 1
    assert problems[0].startswith("input-bucket must be")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("raw/..", "'..' segment"),
        ("raw/./a.csv", "'.' or '..' segment"),
        ("raw/a.csv ", "blank"),
        (" raw/a.csv", "blank"),
        ("raw/a\n.csv", "control character"),
        ("/raw/a.csv", "starts with '/'"),
        ("raw/", "ends with '/'"),
        ("", "empty"),
        ("k" * 1025, "longer than 1024 bytes"),
    ],
)
def test_bad_keys_are_refused(value: str, why: str) -> None:
    """Keys that S3 would take but nobody means (dots, blanks, newlines) are refused, saying why."""
    problems: list[str] = []
    validate.key("input-key", value, problems)
    assert len(problems) == 1
    assert why in problems[0]


def test_good_keys_pass_and_a_folder_only_where_allowed() -> None:
    """Ordinary keys, including non-ASCII ones, pass; a trailing slash only for input prefixes."""
    problems: list[str] = []
    validate.key("input-key", "raw/données 2024.csv", problems)
    validate.key("input-key", "raw/2024/", problems, allow_prefix=True)
    assert problems == []


@pytest.mark.parametrize(
    ("value", "expected"), [("", ""), ("processed", "processed/"), ("a/date=1/", "a/date=1/")]
)
def test_output_prefix_ends_with_a_slash(value: str, expected: str) -> None:
    """A good output prefix gets its trailing slash; the empty prefix stays empty."""
    problems: list[str] = []
    assert validate.output_prefix(value, problems) == expected
    assert problems == []


@pytest.mark.parametrize("value", ["../../etc/", "/etc/", "a//b/", "a/./b", "données/", "a b/"])
def test_bad_output_prefix_is_refused(value: str) -> None:
    """Traversal, a leading slash, empty segments and non-ASCII characters are refused."""
    problems: list[str] = []
    validate.output_prefix(value, problems)
    assert len(problems) == 1
    assert problems[0].startswith("output-prefix m")


@pytest.mark.parametrize("value", ["café", "a\nb", "..", "-x", "a/b", "x" * 129])
def test_bad_dataset_is_refused(value: str) -> None:
    """A dataset outside ASCII letters, digits and ._- (it becomes S3 metadata) is refused."""
    problems: list[str] = []
    validate.dataset(value, problems)
    assert len(problems) == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5", "soon"])
def test_seconds_must_be_positive_and_finite(value: str) -> None:
    """nan, inf, zero, negatives and words are refused (nan and inf never time out)."""
    problems: list[str] = []
    assert validate.seconds("script-timeout", value, problems, default=3600.0) == 3600.0
    assert len(problems) == 1


def test_threads_are_capped_at_the_cpus(caplog: pytest.LogCaptureFixture) -> None:
    """More threads than CPUs are capped, with a warning; fewer pass through unchanged."""
    cpus = validate.cpus_available()
    with caplog.at_level(logging.WARNING):
        assert validate.threads(20000) == cpus
        assert validate.threads(1) == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"threads 20000 is more than the {cpus} CPUs available; using {cpus}"
    ]
