"""The fan-out's DuckDB half: partition stability, the typing rule, refusals of bad objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb
import pytest

from dsjob import config
from dsjob.errors import ConfigError, MalformedInputError
from dsjob.processing import SAMPLE_ROWS, ProcessSettings
from dsjob.shuffle import MapOutput, global_types, map_object, partition_key
from dsjob.workarea import object_tag

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

HEADER = "id,name,age,joined\n"


def mapped(tmp_path: Path, name: str, body: str, partitions: int = 8) -> MapOutput:
    path = tmp_path / f"{name}.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return map_object(path, tmp_path / f"work-{name}", ProcessSettings(threads=1), partitions)


def partition_of(out: MapOutput, row_id: str) -> int:
    """The partition whose file holds the row with this id."""
    con = duckdb.connect()
    query = "SELECT count(*) FROM read_parquet(?) WHERE id = ?"
    found = [
        k
        for k, (path, _) in out.files.items()
        if con.execute(query, [str(path), row_id]).fetchall() != [(0,)]
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_same_cleaned_row_lands_in_the_same_partition_across_objects_and_runs(
    tmp_path: Path,
) -> None:
    """A row padded differently in two objects, and mapped twice, always gets one partition."""
    rows = "".join(f"{i},name {i},{20 + i % 50},2024-01-{1 + i % 28:02d}\n" for i in range(200))
    first = mapped(tmp_path, "a", rows + "700,  Ann ,42,2024-02-01\n")
    second = mapped(tmp_path, "b", rows.replace("\n", " \n") + " 700 ,Ann,  42 , 2024-02-01 \n")
    again = mapped(tmp_path, "a-again", rows + "700,  Ann ,42,2024-02-01\n")
    seen = {partition_of(out, "700") for out in (first, second, again)}
    assert len(seen) == 1
    assert len(first.files) > 1  # the rows really were spread over partitions


def test_rows_equal_only_after_widening_share_a_partition(tmp_path: Path) -> None:
    """Age "42" of a BIGINT object and "42.0" of a DOUBLE object (equal as DOUBLE) share a part."""
    ints = mapped(tmp_path, "ints", "9,Bo,42,2024-03-01\n10,Cy,5,2024-03-02\n")
    floats = mapped(tmp_path, "floats", "9,Bo,42.0,2024-03-01\n10,Cy,5.5,2024-03-02\n")
    assert ints.types["age"] == "BIGINT"
    assert floats.types["age"] == "DOUBLE"
    assert partition_of(ints, "9") == partition_of(floats, "9")


def test_map_counts_and_types_follow_the_builtin_step(tmp_path: Path) -> None:
    """Map drops NULL ids, keeps duplicates for reduce, types trimmed values, counts values."""
    out = mapped(tmp_path, "c", " 1 , a , 3 ,2024-01-01\n,b,4,2024-01-02\n1,a,3,2024-01-01\n2,,,\n")
    assert (out.rows_in, out.rows) == (4, 3)
    assert out.dropped == {"null_id": 1, "malformed": 0}
    assert out.types == {"id": "BIGINT", "name": "VARCHAR", "age": "BIGINT", "joined": "DATE"}
    assert out.non_null == {"id": 3, "name": 2, "age": 2, "joined": 2}


def record(source: str, types: dict[str, str], non_null: dict[str, int]) -> dict[str, object]:
    return {"source": source, "types": types, "non_null": non_null}


def test_global_types_agree_widen_and_ignore_objects_without_values() -> None:
    """Agreement keeps a type; BIGINT+DOUBLE: DOUBLE; DATE+TIMESTAMP: TIMESTAMP; else VARCHAR."""
    a = record(
        "a",
        {"id": "BIGINT", "n": "BIGINT", "t": "DATE", "x": "BIGINT", "e": "DOUBLE"},
        {"id": 5, "n": 5, "t": 5, "x": 5, "e": 5},
    )
    b = record(
        "b",
        {"id": "BIGINT", "n": "DOUBLE", "t": "TIMESTAMP", "x": "DATE", "e": "VARCHAR"},
        {"id": 5, "n": 5, "t": 5, "x": 5, "e": 0},
    )
    assert global_types([a, b]) == {
        "id": "BIGINT",
        "n": "DOUBLE",
        "t": "TIMESTAMP",
        "x": "VARCHAR",
        "e": "DOUBLE",  # b has no value in e: it does not vote
    }


def test_global_types_refuse_objects_with_other_columns() -> None:
    """Objects with different headers fail, naming both objects."""
    a = record("s3://in/a.csv", {"id": "BIGINT", "x": "BIGINT"}, {"id": 1, "x": 1})
    b = record("s3://in/b.csv", {"id": "BIGINT", "y": "BIGINT"}, {"id": 1, "y": 1})
    with pytest.raises(MalformedInputError, match=r"s3://in/b.csv has columns .*s3://in/a.csv"):
        global_types([a, b])


@pytest.mark.parametrize(
    ("left", "right", "kind"),
    [
        ("7", "7.0", "DOUBLE"),
        ("-0.0", "0.0", "DOUBLE"),
        ("2024-01-31", "2024-01-31 00:00:00", "TIMESTAMP"),
        ("1e3", "1000", "DOUBLE"),
    ],
)
def test_partition_key_is_equal_for_values_equal_after_the_cast(
    left: str, right: str, kind: str
) -> None:
    """Texts that are equal once cast to the run's type have equal partition keys."""
    con = duckdb.connect()
    key = partition_key("v")
    row = con.execute(
        f"SELECT CAST(a AS {kind}) = CAST(b AS {kind}), "  # noqa: S608 - kind: a parameter above
        f"(SELECT {key} FROM (SELECT a AS v)) = (SELECT {key} FROM (SELECT b AS v)) "
        "FROM (SELECT ?::VARCHAR AS a, ?::VARCHAR AS b)",
        [left, right],
    ).fetchone()
    assert row == (True, True)


def test_a_zero_size_object_is_refused_with_its_name(tmp_path: Path) -> None:
    """An empty object fails clearly (exit 3) instead of mapping zero rows."""
    path = tmp_path / "2027-01-empty.csv"
    path.write_bytes(b"")
    with pytest.raises(
        MalformedInputError, match=r"2027-01-empty.csv: input file is empty"
    ) as caught:
        map_object(path, tmp_path / "work", ProcessSettings(threads=1), 4)
    assert caught.value.exit_code == 3


def test_a_header_only_object_is_refused(tmp_path: Path) -> None:
    """An object with a header and no rows fails like the single run does."""
    path = tmp_path / "header.csv"
    path.write_text(HEADER, encoding="utf-8")
    with pytest.raises(MalformedInputError, match="header only"):
        map_object(path, tmp_path / "work", ProcessSettings(threads=1), 4)


def test_object_tags_are_unique_and_key_safe() -> None:
    """Two objects with one file name in different folders get different, plain tags."""
    a, b = object_tag("raw/2027-01/data.csv"), object_tag("raw/2027-02/data.csv")
    assert a != b
    assert a.startswith("data.csv-")
    assert object_tag("raw/a b?.csv").startswith("a-b-.csv-")


@pytest.mark.parametrize("phase", ["reduce", "commit"])
def test_reduce_and_commit_need_no_input_object(phase: str) -> None:
    """Reduce and commit resolve without input-bucket/input-key; map still needs them."""
    flags = {"output-bucket": "out", "artifact-bucket": "art", "run-id": "r1", "partition": "0"}
    cfg = config.resolve({**flags, "phase": phase}, {}, lambda _: ({}, frozenset()))
    assert (cfg.phase, cfg.run_id) == (phase, "r1")
    with pytest.raises(ConfigError, match="input-bucket"):
        config.resolve({**flags, "phase": "map"}, {}, lambda _: ({}, frozenset()))


def test_skip_mode_drops_and_counts_ragged_rows_per_object(tmp_path: Path) -> None:
    """With on-bad-rows skip, a ragged row is counted malformed and not written."""
    path = tmp_path / "ragged.csv"
    path.write_text(HEADER + "1,a,3,2024-01-01\n2,b\n3,c,5,2024-01-03\n", encoding="utf-8")
    settings = ProcessSettings(threads=1, on_bad_rows="skip")
    out = map_object(path, tmp_path / "work", settings, 4)
    assert (out.rows_in, out.rows) == (3, 2)
    assert out.dropped == {"null_id": 0, "malformed": 1}


def test_a_late_misfit_makes_the_object_vote_varchar(tmp_path: Path) -> None:
    """A value after the type sample that misfits re-types the column VARCHAR for the object."""
    rows = "".join(f"{i},n,{i % 90},2024-01-01\n" for i in range(SAMPLE_ROWS + 10))
    out = mapped(tmp_path, "late", rows + "999999,n,forty,2024-01-01\n", partitions=2)
    assert out.types["age"] == "VARCHAR"
    assert out.rows == SAMPLE_ROWS + 11
