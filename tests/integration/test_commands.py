"""The other commands as users run them: health, versions, pack, local, --help."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import DSJOB, REPO, LocalServe

pytestmark = pytest.mark.integration


def dsjob(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DSJOB), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env or dict(os.environ),
    )


def test_health_passes_against_the_lock_this_venv_was_built_from() -> None:
    """`dsjob health` exits 0 when installed versions match requirements-dev.lock."""
    proc = dsjob("health", "--lock", str(REPO / "requirements-dev.lock"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed versions match" in proc.stdout


def test_health_fails_when_a_locked_version_drifts(tmp_path: Path) -> None:
    """A lock pinning another duckdb version makes health exit 1 and name the package."""
    lock = (REPO / "requirements-dev.lock").read_text()
    drifted = tmp_path / "drifted.lock"
    import duckdb  # noqa: PLC0415

    drifted.write_text(lock.replace(f"duckdb=={duckdb.__version__}", "duckdb==0.0.1"))
    proc = dsjob("health", "--lock", str(drifted))
    assert proc.returncode == 1
    assert "duckdb: locked 0.0.1" in proc.stdout
    assert "unhealthy: lock" in proc.stderr


def test_versions_lists_the_data_stack() -> None:
    """`dsjob versions` shows installed vs locked versions of the data stack."""
    env = {**os.environ, "DSJOB_LOCK_FILE": str(REPO / "requirements-dev.lock")}
    proc = dsjob("versions", env=env)
    assert proc.returncode == 0
    import duckdb  # noqa: PLC0415

    line = next(x for x in proc.stdout.splitlines() if x.startswith("duckdb "))
    assert line.split()[1:3] == [duckdb.__version__, duckdb.__version__]


def test_help_lists_commands_and_exit_codes_without_loading_the_data_stack() -> None:
    """`dsjob --help` documents the exit codes and loads neither pandas, duckdb nor boto3."""
    code = (
        "import sys; from dsjob.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('pandas', 'duckdb', 'boto3', 'pyarrow') if m in sys.modules))"
    )
    proc = subprocess.run(
        [str(DSJOB.parent / "python"), "-c", code], capture_output=True, text=True, check=True
    )
    assert "143" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_pack_is_reproducible_and_uploads(local_aws: LocalServe, tmp_path: Path) -> None:
    """`dsjob pack` builds the same bytes twice and uploads package and script with SHA-256s."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for out in (first, second):
        proc = dsjob("pack", str(REPO / "examples"), "--no-upload", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    assert (first / "package.tar.gz").read_bytes() == (second / "package.tar.gz").read_bytes()
    with tarfile.open(first / "package.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("package/") for n in names)
    assert not any("__pycache__" in n for n in names)
    proc = dsjob("pack", str(REPO / "examples"), "--prefix", "jobs/v2", env=local_aws.env())
    assert proc.returncode == 0, proc.stderr
    assert "s3://dsjob-artifacts/jobs/v2/package.tar.gz" in proc.stdout
    assert "s3://dsjob-artifacts/jobs/v2/script.py" in proc.stdout


def test_local_run_prints_the_summary() -> None:
    """`dsjob local run` starts the emulator, runs the job and prints rows, outputs and manifest."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")}
    proc = dsjob("local", "run", "--rows", "300", "--log-format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status["rows_in"] == 300
    assert status["manifest"].startswith("s3://dsjob-output/processed/manifests/")
    # JSON logs: the report is one more JSON record, and no stderr line is anything else
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    summary = [r for r in records if r["message"] == "run summary"]
    assert len(summary) == 1, proc.stderr
    assert summary[0]["rows_in"] == 300
    assert summary[0]["run_id"] == status["run_id"]
    assert summary[0]["manifest"] == status["manifest"]
    assert [o["uri"] for o in summary[0]["outputs"]] == status["outputs"]
    assert "rows     in" not in proc.stderr
