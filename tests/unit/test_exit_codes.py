"""The CLI's exit-code edge, in process: each failure class gives its code and one status line."""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

import pytest

from dsjob import cli, stop

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _restore_handlers() -> Iterator[None]:
    """`dsjob run` installs dsjob.stop's and logging's handlers; give pytest its own back."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    logging_handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = logging_handlers, level
    stop.reset()
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    data = tmp_path / "people.csv"
    if not data.exists():
        data.write_text("id,name\n1,Ann\n2,Bob\n")
    argv = ["run", "--input", str(data), "--output-dir", str(tmp_path / "out"), "--run-id", "r1"]
    code = cli.main([*argv, "--log-format", "json", *extra])
    out, err = capsys.readouterr()
    status: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return code, status, err


def test_success_exits_0_with_a_succeeded_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A good run returns 0 and its last stdout line says succeeded, with the run id."""
    code, status, _ = _run(tmp_path, capsys)
    assert code == 0
    assert (status["status"], status["exit_code"], status["run_id"]) == ("succeeded", 0, "r1")


def test_config_error_exits_2_naming_the_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid parameter value returns 2; stderr and the status line name it."""
    code, status, err = _run(tmp_path, capsys, "--on-bad-rows", "sometimes")
    assert code == 2
    assert (status["status"], status["exit_code"]) == ("failed", 2)
    assert "on-bad-rows" in status["error"]
    # --log-format json: the report is the last stderr record, at level error
    record = json.loads(err.splitlines()[-1])
    assert (record["level"], record["message"], record["exit_code"]) == (
        "error",
        status["error"],
        2,
    )


def test_missing_input_exits_3_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing input file returns 3 and names the path, with the run id in the status."""
    (tmp_path / "people.csv").mkdir()
    missing = tmp_path / "people.csv" / "gone.csv"
    argv = ["run", "--input", str(missing), "--output-dir", str(tmp_path / "out")]
    code = cli.main([*argv, "--run-id", "r3", "--log-format", "json"])
    out, _ = capsys.readouterr()
    status = json.loads(out.strip().splitlines()[-1])
    assert code == 3
    assert status["exit_code"] == 3
    assert str(missing) in status["error"]
    assert status["run_id"] == "r3"


def test_failing_script_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A script that exits non-zero returns 4 with its stderr tail in the error."""
    script = tmp_path / "script.py"
    script.write_text("raise SystemExit('column id missing')\n")
    code, status, _ = _run(tmp_path, capsys, "--script", str(script))
    assert code == 4
    assert status["exit_code"] == 4
    assert "column id missing" in status["error"]


def test_unexpected_exception_exits_1_with_traceback_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception (the data engine fails to import) returns 1 and logs a traceback."""
    # None in sys.modules makes `import duckdb` raise ImportError: a broken install.
    monkeypatch.setitem(sys.modules, "duckdb", None)
    code, status, err = _run(tmp_path, capsys)
    assert code == 1
    assert (status["status"], status["exit_code"]) == ("failed", 1)
    assert status["error"].startswith("internal error: ModuleNotFoundError")
    assert "Traceback (most recent call last)" in err


def test_unknown_flag_exits_2_with_a_status_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A usage error (an unknown flag) returns 2 and still prints the JSON status line."""
    code = cli.main(["run", "--no-such-flag"])
    out, err = capsys.readouterr()
    status = json.loads(out.strip().splitlines()[-1])
    assert code == 2
    assert (status["status"], status["exit_code"]) == ("failed", 2)
    assert "no-such-flag" in status["error"]
    assert "Usage:" in err
