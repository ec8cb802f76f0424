"""Checks before the work: output dir and work root, and the fetched input's real format."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from dsjob.config import JobConfig, resolve
from dsjob.errors import ConfigError, MalformedInputError
from dsjob.preflight import check_input_format, preflight

pytestmark = pytest.mark.unit


def local_config(tmp_path: Path, **flags: str) -> JobConfig:
    data = tmp_path / "in.csv"
    data.write_text("id\n1\n", encoding="utf-8")
    base = {"input": str(data), "output-dir": str(tmp_path / "out")}
    return resolve({**base, **flags}, {}, None)


def test_a_good_local_run_passes(tmp_path: Path) -> None:
    """An output dir that can be created and an existing work root pass, creating nothing."""
    preflight(local_config(tmp_path, **{"work-root": str(tmp_path)}), None)
    assert not (tmp_path / "out").exists()


def test_output_file_and_missing_work_root_are_reported_together(tmp_path: Path) -> None:
    """An output dir that is a file and a missing work root are both named in one error."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    cfg = local_config(
        tmp_path, **{"output-dir": str(tmp_path / "file"), "work-root": str(tmp_path / "nope")}
    )
    with pytest.raises(ConfigError) as info:
        preflight(cfg, None)
    assert f"output-dir {tmp_path / 'file'} is a file" in str(info.value)
    assert f"work-root {tmp_path / 'nope'} does not exist" in str(info.value)


def test_output_dir_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    """An output dir whose parent is a file is refused, naming that parent."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    cfg = local_config(tmp_path, **{"output-dir": str(tmp_path / "file" / "out")})
    with pytest.raises(ConfigError, match=r"cannot be created: .*file is a file"):
        preflight(cfg, None)


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (gzip.compress(b"id\n1\n"), "gzip-compressed"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 8, "zstd-compressed"),
        (b"PAR1" + b"\0" * 8, "Parquet"),
        (b"PK\x03\x04" + b"\0" * 8, "a zip archive"),
    ],
)
def test_binary_data_under_a_csv_name_is_named(tmp_path: Path, head: bytes, what: str) -> None:
    """Compressed or binary data named .csv is an input error saying what it really is."""
    path = tmp_path / "data.csv"
    path.write_bytes(head)
    with pytest.raises(MalformedInputError, match=f"s3://b/data.csv is {what}"):
        check_input_format(path, "s3://b/data.csv")


def test_plain_csv_and_honest_names_pass(tmp_path: Path) -> None:
    """A text CSV, and gzip data named .csv.gz, are left to the step."""
    text = tmp_path / "a.csv"
    text.write_text("id\n1\n", encoding="utf-8")
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(b"id\n1\n"))
    check_input_format(text, str(text))
    check_input_format(packed, str(packed))
