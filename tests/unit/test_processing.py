"""Tests for the built-in DuckDB step (dsjob.processing) and the sample generator."""

# SQL text is this module's product: identifiers and literals go through quoting
# helpers (or are generated here), never raw user strings.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dsjob.errors import InputError, MalformedInputError, OutOfMemoryError, UserCodeError
from dsjob.processing import (
    MAX_COLUMNS,
    SAMPLE_ROWS,
    ProcessSettings,
    cgroup_memory_limit,
    connect,
    default_memory_limit,
    default_threads,
    run_builtin,
)
from dsjob.sample import write_members_csv

pytestmark = pytest.mark.unit

MESSY = (
    "id,name,score,joined,flag,note\n"
    '1,  Anna ,1.5,2024-01-02 03:04:05,yes,"a, b"\n'
    "2,Bram,,2024-01-03 00:00:00,no,\n"
    '1,  Anna ,1.5,2024-01-02 03:04:05,yes,"a, b"\n'  # exact duplicate of line 2
    ",Chloe,2.5,2024-01-04 00:00:00,yes,x\n"  # NULL id
    "  ,Daan,3.5,2024-01-05 00:00:00,no,y\n"  # blank id is NULL too
    '3,"",4.5,2024-01-06 00:00:00,no,   \n'
)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def rows(path: Path, order: str = "") -> list[tuple[Any, ...]]:
    reader = "read_parquet" if path.suffix == ".parquet" else "read_csv"
    with duckdb.connect() as con:
        return con.execute(f"SELECT * FROM {reader}('{path}') {order}").fetchall()


def test_cleans_trims_and_deduplicates(tmp_path: Path) -> None:
    """Strings are trimmed, empties become NULL, NULL ids and exact duplicates are dropped."""
    src = write(tmp_path / "in.csv", MESSY)
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert result.rows_in == 6
    assert result.rows_out == 3
    assert result.dropped == {"null_id": 2, "duplicate": 1, "malformed": 0}
    assert result.files == (tmp_path / "out" / "data.parquet",)
    got = rows(result.files[0], "ORDER BY id")
    assert got == [
        (1, "Anna", 1.5, dt.datetime(2024, 1, 2, 3, 4, 5), True, "a, b"),  # noqa: DTZ001
        (2, "Bram", None, dt.datetime(2024, 1, 3), False, None),  # noqa: DTZ001
        (3, None, 4.5, dt.datetime(2024, 1, 6), False, None),  # noqa: DTZ001
    ]


def test_infers_types_after_trimming(tmp_path: Path) -> None:
    """Padded numbers, dates and timestamps get real types, and '2.5' never becomes an integer."""
    src = write(
        tmp_path / "in.csv",
        "id,n,x,d,t,s\n 1 , 2.5 , 7 , 2024-01-01 ,2024-01-01 10:00:00 ,  hi \n2,3,8,,,\n",
    )
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert result.columns == {
        "id": "BIGINT",
        "n": "DOUBLE",
        "x": "BIGINT",
        "d": "DATE",
        "t": "TIMESTAMP",
        "s": "VARCHAR",
    }
    assert rows(result.files[0], "ORDER BY id")[0] == (
        1,
        2.5,
        7,
        dt.date(2024, 1, 1),
        dt.datetime(2024, 1, 1, 10),  # noqa: DTZ001
        "hi",
    )


def test_missing_id_column_only_deduplicates(tmp_path: Path) -> None:
    """Without the id column no row is dropped for a NULL id; duplicates still are."""
    src = write(tmp_path / "in.csv", "name,city\na,x\n,y\na,x\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert (result.rows_in, result.rows_out) == (3, 2)
    assert result.dropped == {"null_id": 0, "duplicate": 1, "malformed": 0}


def test_custom_id_column(tmp_path: Path) -> None:
    """The configured id column is the one whose NULLs are dropped."""
    src = write(tmp_path / "in.csv", "id,member_no\n1,\n2,b\n,c\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings(id_column="member_no"))
    assert rows(result.files[0], "ORDER BY member_no") == [(2, "b"), (None, "c")]
    assert result.dropped["null_id"] == 1


def test_both_formats_and_dataset_name(tmp_path: Path) -> None:
    """Parquet and CSV outputs are named after the dataset and hold the same rows."""
    src = write(tmp_path / "in.csv", MESSY)
    settings = ProcessSettings(output_formats=("csv", "parquet"), dataset="members")
    result = run_builtin(src, tmp_path / "out", settings)
    parquet, csv = tmp_path / "out" / "members.parquet", tmp_path / "out" / "members.csv"
    assert result.files == (parquet, csv)
    assert sorted(rows(parquet)) == sorted(rows(csv))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "members.csv",
        "members.parquet",
    ]
    assert csv.read_text(encoding="utf-8").startswith("id,name,score,joined,flag,note\n")


def test_parquet_output_is_zstd(tmp_path: Path) -> None:
    """The Parquet file is zstd-compressed."""
    src = write(tmp_path / "in.csv", MESSY)
    out = run_builtin(src, tmp_path / "out", ProcessSettings()).files[0]
    with duckdb.connect() as con:
        meta = con.execute(f"SELECT compression FROM parquet_metadata('{out}')").fetchall()
    codecs = {r[0] for r in meta}
    assert codecs == {"ZSTD"}


def test_parquet_input_detected_by_magic(tmp_path: Path) -> None:
    """A Parquet file is read as Parquet whatever its name, and cleaned the same way."""
    src = tmp_path / "input.dat"
    with duckdb.connect() as con:
        con.execute(
            f"COPY (SELECT * FROM (VALUES (1, ' a '), (1, 'a'), (NULL, 'b'), (2, '')) t(id, v)) "
            f"TO '{src}' (FORMAT parquet)"
        )
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert rows(result.files[0], "ORDER BY id") == [(1, "a"), (2, None)]
    assert result.dropped == {"null_id": 1, "duplicate": 1, "malformed": 0}


def test_transform_sql_result_is_written_in_order(tmp_path: Path) -> None:
    """transform_sql runs against the cleaned `input` view and its ORDER BY is kept."""
    src = write(tmp_path / "in.csv", MESSY)
    sql = "SELECT flag, count(*) AS n FROM input GROUP BY flag ORDER BY flag DESC;"
    result = run_builtin(src, tmp_path / "out", ProcessSettings(transform_sql=sql))
    assert rows(result.files[0]) == [(True, 1), (False, 2)]
    assert result.rows_out == 2
    assert result.dropped == {"null_id": 2, "duplicate": 1, "malformed": 0}
    assert result.columns == {"flag": "BOOLEAN", "n": "BIGINT"}


@pytest.mark.parametrize(
    ("sql", "needle"),
    [("SELEC 1", "syntax error"), ("SELECT nope FROM input", "nope")],
)
def test_bad_transform_is_user_code_error(tmp_path: Path, sql: str, needle: str) -> None:
    """A transform that does not parse or bind fails as user code, naming the problem."""
    src = write(tmp_path / "in.csv", MESSY)
    with pytest.raises(UserCodeError, match=r"transform\.sql failed") as info:
        run_builtin(src, tmp_path / "out", ProcessSettings(transform_sql=sql))
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"id,name\n", "header only"),
        (b"id,name\n1,a\n2,b,c\n3,d\n", "line 3.*Expected Number of Columns: 2 Found: 3"),
        (b"id,name\n1,a\n2,b\n3\n4,d\n", "line 4"),
        (b"id,name\n1,a\n2,\xff\xfeb\n3,d\n", "line 3.*not utf-8"),
    ],
    ids=["empty", "blank-lines", "header-only", "too-many-columns", "too-few-columns", "encoding"],
)
def test_malformed_input_names_the_problem(tmp_path: Path, content: bytes, match: str) -> None:
    """Malformed CSV fails with MalformedInputError naming the line, never a DuckDB dump."""
    src = write(tmp_path / "in.csv", content)
    with pytest.raises(MalformedInputError, match=match) as info:
        run_builtin(src, tmp_path / "out", ProcessSettings())
    message = str(info.value)
    assert "Possible Solution" not in message
    assert "\n" not in message


def test_skip_policy_counts_malformed_rows(tmp_path: Path) -> None:
    """With on_bad_rows=skip, ragged rows are dropped and counted as malformed."""
    src = write(tmp_path / "in.csv", "id,name\n1,a\n2,b,c\n1,a\n4,d\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings(on_bad_rows="skip"))
    assert (result.rows_in, result.rows_out) == (4, 2)
    assert result.dropped == {"null_id": 0, "duplicate": 1, "malformed": 1}
    assert rows(result.files[0], "ORDER BY id") == [(1, "a"), (4, "d")]


def test_default_spill_dir_is_removed(tmp_path: Path) -> None:
    """The default spill directory beside the input does not outlive the run."""
    src = write(tmp_path / "in.csv", MESSY)
    run_builtin(src, tmp_path / "out", ProcessSettings())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out"]


def test_members_csv_is_reproducible_and_messy(tmp_path: Path) -> None:
    """The generator is deterministic per seed and yields duplicates, NULL ids and padding."""
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_members_csv(a, 5_000)
    write_members_csv(b, 5_000)
    write_members_csv(c, 5_000, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    text = a.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 5_001
    assert ',"' in text  # quoted free text with commas
    assert "  " in text  # whitespace padding
    result = run_builtin(a, tmp_path / "out", ProcessSettings())
    assert result.rows_in == 5_000
    assert result.dropped["null_id"] > 0
    assert result.dropped["duplicate"] > 0
    assert result.columns["joined_at"] == "TIMESTAMP"
    assert result.columns["balance"] == "DOUBLE"


def test_skip_policy_with_no_good_rows_fails_and_leaves_nothing(tmp_path: Path) -> None:
    """When every row is malformed, skip mode still fails and leaves no output file behind."""
    src = write(tmp_path / "in.csv", "id,name\n1,a,x\n2,b,y\n")
    with pytest.raises(MalformedInputError, match="no data rows"):
        run_builtin(src, tmp_path / "out", ProcessSettings(on_bad_rows="skip"))
    assert list((tmp_path / "out").iterdir()) == []


def test_unwritable_input_dir_spills_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the input's directory refuses the spill dir, the step spills to the temp dir."""
    real = tempfile.mkdtemp
    used: list[str] = []

    def refuse_beside_input(prefix: str = "", dir: str | Path | None = None) -> str:  # noqa: A002
        if dir is not None:
            raise PermissionError(13, "read-only", str(dir))
        used.append(real(prefix=prefix, dir=tmp_path / "tmp"))
        return used[-1]

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("dsjob.processing.tempfile.mkdtemp", refuse_beside_input)
    src = write(tmp_path / "in.csv", MESSY)
    result = run_builtin(src, tmp_path / "out", ProcessSettings())
    assert result.rows_out == 3
    assert len(used) == 1
    assert not Path(used[0]).exists()


# --- type inference never makes a valid file malformed ------------------------------------------

LATE = SAMPLE_ROWS + 10_000


def late_value_csv(path: Path, regular: str, late: str) -> Path:
    """LATE rows whose column v holds ``regular`` (with the row number), then one ``late`` row."""
    body = "".join(f"{i},{regular.format(i=i)}\n" for i in range(LATE))
    return write(path, f"id,v\n{body}{LATE},{late}\n")


@pytest.mark.parametrize("policy", ["fail", "skip"])
@pytest.mark.parametrize(
    ("regular", "late"),
    [
        ("{i}", "ABC"),
        (" {i} ", "ABC"),  # typed by the trimmed sample, not the reader
        ("{i}", "99999999999999999999999"),  # beyond BIGINT
        ("2024-01-01 00:00:00", "01/02/2024 10:00"),  # a second timestamp format
    ],
    ids=["text-after-integers", "text-after-padded", "integer-overflow", "mixed-timestamps"],
)
def test_value_after_sample_retypes_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str, regular: str, late: str
) -> None:
    """A value after the sample that misfits its column re-types it VARCHAR; no row is lost."""
    src = late_value_csv(tmp_path / "in.csv", regular, late)
    result = run_builtin(src, tmp_path / "out", ProcessSettings(on_bad_rows=policy))
    assert result.columns["v"] == "VARCHAR"
    assert result.dropped == {"null_id": 0, "duplicate": 0, "malformed": 0}
    assert (result.rows_in, result.rows_out) == (LATE + 1, LATE + 1)
    assert (LATE, late) in rows(result.files[0])
    assert any(getattr(r, "column", None) == "v" for r in caplog.records)


def test_counts_are_true_with_skip_policy(tmp_path: Path) -> None:
    """Each row is in, out or dropped under its real reason: a valid row is never a duplicate."""
    good = "".join(f"{i},{i}\n" for i in range(LATE))
    src = write(tmp_path / "in.csv", f"id,v\n{good}{LATE},ABC\n1,2,3\n,7\n0,0\n")
    result = run_builtin(src, tmp_path / "out", ProcessSettings(on_bad_rows="skip"))
    assert result.rows_in == LATE + 4
    assert result.dropped == {"null_id": 1, "duplicate": 1, "malformed": 1}
    assert result.rows_out == LATE + 1


# --- an empty result fails and leaves nothing ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sql", "needle"),
    [
        ("id,name\n,a\n  ,b\n", None, "no rows left after cleaning"),
        ("id,name\n1,a\n2,b\n", "SELECT * FROM input WHERE id > 5", "selected no rows"),
    ],
    ids=["every-id-null", "transform-selects-nothing"],
)
def test_empty_result_is_input_error_and_writes_nothing(
    tmp_path: Path, text: str, sql: str | None, needle: str
) -> None:
    """An empty cleaned or transformed result exits 3 and leaves no file in the output dir."""
    src = write(tmp_path / "in.csv", text)
    settings = ProcessSettings(transform_sql=sql, output_formats=("parquet", "csv"))
    with pytest.raises(InputError, match=needle) as info:
        run_builtin(src, tmp_path / "out", settings)
    assert info.value.exit_code == 3
    assert list((tmp_path / "out").iterdir()) == []


# --- width --------------------------------------------------------------------------------------


def wide_csv(path: Path, width: int, nrows: int = 50) -> Path:
    header = ",".join(f"c{i}" for i in range(width))
    body = "".join(",".join(str(r + i) for i in range(width)) + "\n" for r in range(nrows))
    return write(path, f"{header}\n{body}")


def test_too_wide_input_fails_fast_naming_the_width(tmp_path: Path) -> None:
    """A 5,000-column CSV fails at once, naming its width and the cap."""
    src = wide_csv(tmp_path / "in.csv", 5_000)
    with pytest.raises(InputError, match=f"5,000 columns.*at most {MAX_COLUMNS:,}"):
        run_builtin(src, tmp_path / "out", ProcessSettings())


def test_wide_input_under_the_cap_is_processed(tmp_path: Path) -> None:
    """A 300-column CSV gets every column typed."""
    src = wide_csv(tmp_path / "in.csv", 300)
    result = run_builtin(src, tmp_path / "out", ProcessSettings(id_column="c0"))
    assert result.rows_out == 50
    assert set(result.columns.values()) == {"BIGINT"}
    assert len(result.columns) == 300


# --- the transform sandbox ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "refused.*/etc/passwd"),
        ("SELECT * FROM read_text('/proc/self/environ')", "refused.*/proc/self/environ"),
        ("SELECT * FROM input; COPY (SELECT 1) TO '{marker}'", "exactly one SELECT.*found 2"),
        ("COPY (SELECT * FROM input) TO '{marker}'", "refused.*COPY"),
        ("ATTACH '{marker}' AS db", "refused.*ATTACH"),
        ("INSTALL httpfs", "refused.*INSTALL"),
        ("", "exactly one SELECT.*found 0"),
    ],
    ids=["read-csv", "read-text", "second-statement", "copy", "attach", "install", "empty"],
)
def test_transform_is_one_read_only_select(tmp_path: Path, sql: str, needle: str) -> None:
    """A transform that reads or writes outside `input` is refused as user code; nothing runs."""
    marker = tmp_path / "written-by-transform"
    src = write(tmp_path / "in.csv", MESSY)
    settings = ProcessSettings(transform_sql=sql.format(marker=marker))
    with pytest.raises(UserCodeError, match=needle) as info:
        run_builtin(src, tmp_path / "out", settings)
    assert info.value.exit_code == 4
    assert not marker.exists()
    assert list((tmp_path / "out").iterdir()) == []


# --- memory -------------------------------------------------------------------------------------


def test_memory_limit_in_force_is_the_configured_one(tmp_path: Path) -> None:
    """The step's connection runs with the configured memory limit and threads."""
    with connect(ProcessSettings(memory_limit="256MiB", threads=1), tmp_path) as con:
        got = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads')"
        ).fetchall()
    assert got == [("256.0 MiB", 1)]


def test_default_memory_limit_in_force_comes_from_the_cgroup(tmp_path: Path) -> None:
    """Without a configured limit the connection uses the one derived from the machine."""
    with connect(ProcessSettings(), tmp_path) as con:
        got = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    with duckdb.connect(config={"memory_limit": f"{default_memory_limit() // 1024**2}MiB"}) as ref:
        want = ref.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert got == want
    assert (
        got != duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    )


def test_input_larger_than_the_limit_spills(tmp_path: Path) -> None:
    """An input whose distinct rows exceed the memory limit spills to temp_dir and stays exact."""
    src = tmp_path / "members.csv"
    write_members_csv(src, 150_000)  # ~90 MB of distinct rows in DuckDB's format
    spill = tmp_path / "spill"
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        # Sampled every 5 ms while the step runs: spill files live for its dedup phase.
        while not done.wait(0.005):
            with contextlib.suppress(OSError):
                peak = max(peak, sum(p.stat().st_size for p in spill.iterdir()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        tight = run_builtin(
            src,
            tmp_path / "tight",
            ProcessSettings(memory_limit="64MiB", threads=1, temp_dir=spill),
        )
    finally:
        done.set()
        watcher.join()
    assert peak > 0
    roomy = run_builtin(src, tmp_path / "roomy", ProcessSettings(memory_limit="2GiB"))
    assert (tight.rows_out, tight.dropped) == (roomy.rows_out, roomy.dropped)
    with duckdb.connect() as con:
        diff = con.execute(
            f"SELECT count(*) FROM (SELECT * FROM '{tight.files[0]}' "
            f"EXCEPT ALL SELECT * FROM '{roomy.files[0]}')"
        ).fetchall()
    assert diff == [(0,)]


def test_out_of_memory_is_exit_6_saying_to_raise_the_limit(tmp_path: Path) -> None:
    """A limit too small to run in fails with OutOfMemoryError naming memory-limit."""
    src = write(tmp_path / "in.csv", MESSY)
    with pytest.raises(OutOfMemoryError, match="raise memory-limit") as info:
        run_builtin(src, tmp_path / "out", ProcessSettings(memory_limit="1MB"))
    assert info.value.exit_code == 6


# --- the cgroup reader --------------------------------------------------------------------------


def cgroup_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n", encoding="ascii")
    return root


@pytest.mark.parametrize(
    ("files", "memory", "cpus"),
    [
        ({"memory.max": "536870912", "cpu.max": "150000 100000"}, 512 * 1024**2, 2),
        ({"memory.max": "max", "cpu.max": "max 100000"}, None, None),
        (
            {
                "memory/memory.limit_in_bytes": "536870912",
                "cpu/cpu.cfs_quota_us": "100000",
                "cpu/cpu.cfs_period_us": "100000",
            },
            512 * 1024**2,
            1,
        ),
        (
            {
                "memory/memory.limit_in_bytes": "9223372036854771712",
                "cpu/cpu.cfs_quota_us": "-1",
                "cpu/cpu.cfs_period_us": "100000",
            },
            None,
            None,
        ),
    ],
    ids=["v2-limited", "v2-unlimited", "v1-limited", "v1-unlimited"],
)
def test_cgroup_limits_are_read_from_the_tree(
    tmp_path: Path, files: dict[str, str], memory: int | None, cpus: int | None
) -> None:
    """Memory and CPU limits come from a cgroup v1 or v2 tree; unlimited means the machine's."""
    root = cgroup_tree(tmp_path, files)
    assert cgroup_memory_limit(root) == memory
    machine = len(os.sched_getaffinity(0))
    assert default_threads(root) == (min(cpus, machine) if cpus else machine)
    if memory:
        assert default_memory_limit(root) == 312 * 1024**2
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert default_memory_limit(root) == min(int(total * 0.75), total - 200 * 1024**2)
