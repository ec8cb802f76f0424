"""Exit 1 through the real CLI: an unexpected exception logs its traceback and prints a status."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.support.paths import DSJOB

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def test_broken_data_engine_exits_1_with_traceback_log_and_json_status(tmp_path: Path) -> None:
    """A data engine failing at import (a broken image) exits 1: traceback logged, JSON status."""
    broken = tmp_path / "broken-site" / "duckdb"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('duckdb is broken in this image')\n")
    data = tmp_path / "people.csv"
    data.write_text("id,name\n1,Ann\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_ENDPOINT"))}
    env["PYTHONPATH"] = str(broken.parent)
    proc = subprocess.run(
        [
            str(DSJOB),
            "run",
            *("--input", str(data), "--output-dir", str(tmp_path / "out")),
            *("--run-id", "boom", "--log-format", "json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    # The data engine loads after the config resolved, so the status names the run.
    assert status == {
        "status": "failed",
        "exit_code": 1,
        "error": "internal error: RuntimeError: duckdb is broken in this image",
        "run_id": "boom",
    }
    logged = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    errors = [r for r in logged if r["level"] == "error"]
    assert errors, proc.stderr[-2000:]
    assert "Traceback (most recent call last)" in errors[-1]["exception"]
    assert "RuntimeError: duckdb is broken in this image" in errors[-1]["exception"]
    assert not (tmp_path / "out" / "manifests").exists()
