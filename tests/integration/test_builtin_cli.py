"""The built-in step's hostile-input policies through the real CLI, as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DSJOB = Path(sys.executable).with_name("dsjob")


def run(tmp_path: Path, csv_text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "people.csv"
    data.write_text(csv_text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_"))}
    return subprocess.run(
        [str(DSJOB), "run", "--input", str(data), "--output-dir", str(tmp_path / "out"), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.name for p in out.glob("people*")) if out.exists() else []


def test_every_id_null_exits_3_and_publishes_nothing(tmp_path: Path) -> None:
    """A file whose ids are all NULL exits 3, says nothing is left, and writes no output."""
    proc = run(tmp_path, "id,name\n,a\n ,b\n")
    assert proc.returncode == 3, proc.stderr
    assert "no rows left after cleaning" in json.loads(proc.stdout.splitlines()[-1])["error"]
    assert outputs(tmp_path) == []


def test_transform_reading_a_file_exits_4_and_publishes_nothing(tmp_path: Path) -> None:
    """A transform that reads /etc/passwd is refused with exit 4, naming the file."""
    sql = tmp_path / "transform.sql"
    sql.write_text("SELECT * FROM read_csv('/etc/passwd')", encoding="utf-8")
    proc = run(tmp_path, "id,name\n1,a\n", "--transform", str(sql))
    assert proc.returncode == 4, proc.stderr
    error = json.loads(proc.stdout.splitlines()[-1])["error"]
    assert "refused" in error
    assert "/etc/passwd" in error
    assert outputs(tmp_path) == []


def test_text_after_sampled_integers_is_kept(tmp_path: Path) -> None:
    """30,000 integers then `30000,ABC` is valid: exit 0, every row out, nothing a duplicate."""
    body = "".join(f"{i},{i}\n" for i in range(30_000))
    proc = run(tmp_path, f"id,n\n{body}30000,ABC\n", "--on-bad-rows", "skip")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.splitlines()[-1])
    assert (status["rows_in"], status["rows_out"]) == (30_001, 30_001)
    assert status["dropped"] == {"null_id": 0, "duplicate": 0, "malformed": 0}
