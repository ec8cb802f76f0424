"""The built-in step's progress line through the CLI: on a pseudo-terminal, never in JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DSJOB = Path(sys.executable).with_name("dsjob")
# A transform whose one scalar subquery keeps DuckDB busy for about a second.
SLOW_SQL = (
    "SELECT i.* FROM input i, (SELECT sum(hash(r)) AS s FROM range(120000000) t(r)) "
    "WHERE s IS NOT NULL"
)


def run_on_pty(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    """Run `dsjob run` with its stderr on a pty slave; return (exit code, stdout, pty text)."""
    data = tmp_path / "people.csv"
    data.write_text("id,name\n1,a\n2,b\n", encoding="utf-8")
    sql = tmp_path / "transform.sql"
    sql.write_text(SLOW_SQL, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_"))}
    env["DSJOB_THREADS"] = "1"
    cmd = [str(DSJOB), "run", "--input", str(data), "--output-dir", str(tmp_path / "out")]
    return on_pty([*cmd, "--transform", str(sql), *extra], env, timeout=60)


def on_pty(cmd: list[str], env: dict[str, str], *, timeout: float) -> tuple[int, str, str]:
    """Run `cmd` with its stderr on a pty slave; return (exit code, stdout, pty text)."""
    master, slave = os.openpty()
    with subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    ) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the slave has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        code = proc.wait(timeout=timeout)
    return code, stdout, b"".join(chunks).decode()


def test_text_logs_on_a_tty_show_the_processing_line(tmp_path: Path) -> None:
    """On a TTY in text mode the step draws `processing [...] NN%` and still exits 0."""
    code, stdout, tty = run_on_pty(tmp_path)
    assert code == 0, tty
    assert json.loads(stdout.splitlines()[-1])["status"] == "succeeded"
    frames = [f for f in tty.replace("\n", "\r").split("\r") if f.startswith("processing [")]
    assert frames, tty
    assert any(int(f.split("]")[1].strip(" %")) > 0 for f in frames), tty


def test_json_logs_on_a_tty_are_only_json_lines(tmp_path: Path) -> None:
    """With --log-format json, even on a TTY, no progress is drawn and every log line is JSON."""
    code, stdout, tty = run_on_pty(tmp_path, "--log-format", "json")
    assert code == 0, tty
    assert json.loads(stdout.splitlines()[-1])["status"] == "succeeded"
    text = tty.replace("\r\n", "\n")  # the pty's ONLCR turns each \n into \r\n
    assert "\r" not in text
    assert "processing [" not in text
    # stderr (the pty) holds only JSON log records, the run's summary among them
    logs = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(record, dict) for record in logs), text
    assert any(record.get("message") == "run summary" for record in logs), text


def seed_on_pty(*extra: str) -> tuple[int, str]:
    """Run `dsjob local run` (which seeds the emulator) with stderr on a pty; (exit, pty text)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_"))}
    code, _, tty = on_pty([str(DSJOB), "local", "run", "--rows", "2000", *extra], env, timeout=120)
    return code, tty


def test_seeding_draws_its_upload_bar_on_a_tty_and_not_in_json() -> None:
    """Seeding shows the sample upload reaching 100% in text mode, and nothing in JSON."""
    code, tty = seed_on_pty()
    assert code == 0, tty
    frames = [f for f in tty.replace("\n", "\r").split("\r") if f.startswith("seed s3://")]
    assert frames, tty
    assert " 100% " in frames[-1], frames
    code, tty = seed_on_pty("--log-format", "json")
    assert code == 0, tty
    assert "seed s3://" not in tty
