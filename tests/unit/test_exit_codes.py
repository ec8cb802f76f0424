"""The CLI's exit-code edge, in process: each failure class gives its code and one status line."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dsjob import cli, stop

if TYPE_CHECKING:
    from collections.abc import Iterator

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
    """A usage error (an unknown flag) returns 2: usage on stderr, only the status on stdout."""
    code = cli.main(["run", "--no-such-flag"])
    out, err = capsys.readouterr()
    (line,) = out.strip().splitlines()
    status = json.loads(line)
    assert code == 2
    assert status == {
        "status": "failed",
        "exit_code": 2,
        "error": "No such option '--no-such-flag'.",
    }
    assert err == "Usage: dsjob run [OPTIONS]\nError: No such option '--no-such-flag'.\n"


def test_a_usage_error_with_json_logs_is_one_error_record(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With JSON logs a usage error is one error record carrying the code and the usage line."""
    monkeypatch.setenv("DSJOB_LOG_FORMAT", "json")
    logging.getLogger().handlers.clear()  # as in a fresh process; the fixture restores them
    code = cli.main(["run", "--no-such-flag"])
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    record = json.loads(line)
    assert code == 2
    assert json.loads(out)["exit_code"] == 2
    assert {k: record[k] for k in ("level", "message", "exit_code", "usage")} == {
        "level": "error",
        "message": "No such option '--no-such-flag'.",
        "exit_code": 2,
        "usage": "Usage: dsjob run [OPTIONS]",
    }


def test_text_logs_show_only_the_error_line_for_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal a bad value prints exactly `Error: <message>`, with no traceback."""
    code, status, err = _run(tmp_path, capsys, "--on-bad-rows", "sometimes", "--log-format", "text")
    assert code == 2
    assert err == f"Error: {status['error']}\n"


def test_text_logs_show_the_traceback_of_a_bug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal an internal error logs its traceback, then the `Error:` line."""
    monkeypatch.setitem(sys.modules, "duckdb", None)  # a broken install, as above
    code, status, err = _run(tmp_path, capsys, "--log-format", "text")
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1] == f"Error: {status['error']}"


def _tar_escaping(path: Path) -> Path:
    """A package.tar.gz whose one member climbs out of the destination."""
    with tarfile.open(path, "w:gz") as tar:
        member = tarfile.TarInfo("../evil.py")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    return path


@pytest.mark.parametrize(
    ("case", "code", "error"),
    [
        ("malformed", 3, "malformed CSV at line 2"),
        ("unsafe-archive", 3, "unsafe member in package archive: '../evil.py'"),
        ("script-timeout", 4, "slow.py timed out after 0.3 s and was stopped"),
        ("out-of-memory", 6, "DuckDB ran out of memory"),
    ],
)
def test_each_failure_class_exits_with_its_code_and_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, code: int, error: str
) -> None:
    """Bad data, an unsafe package, a slow script and DuckDB's OOM each give their own code."""
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    # A list aggregate cannot spill: 3 M rows of it overflow DuckDB's 64 MiB floor.
    sql = tmp_path / "t.sql"
    sql.write_text("SELECT 1 AS id, list(repeat('x', 100)) AS l FROM range(3000000)\n")
    (tmp_path / "people.csv").write_text(
        'id,name\n1,"Ann\n2,Bob\n' if case == "malformed" else "id\n1\n"
    )
    extra = {
        "malformed": (),
        "unsafe-archive": (
            "--package",
            str(_tar_escaping(tmp_path / "p.tar.gz")),
            "--script",
            str(slow),
        ),
        "script-timeout": ("--script", str(slow), "--script-timeout", "0.3"),
        "out-of-memory": ("--transform", str(sql), "--memory-limit", "64MiB", "--threads", "1"),
    }[case]
    got, status, err = _run(tmp_path, capsys, *extra)
    assert got == code
    assert "Traceback" not in err  # a DsjobError is a finding, not a bug
    assert (status["status"], status["exit_code"], status["run_id"]) == ("failed", code, "r1")
    assert status["error"].startswith(error)
    record = json.loads(err.splitlines()[-1])  # JSON logs: the error is one record
    assert (record["level"], record["message"], record["exit_code"]) == (
        "error",
        status["error"],
        status["exit_code"],
    )
    assert not (tmp_path / "out").exists()


def test_an_unreachable_endpoint_exits_5_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection to AWS is transient: exit 5, the only code worth a retry."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    argv = ["--input-bucket", "a", "--input-key", "b.csv", "--output-bucket", "c"]
    code = cli.main(["run", *argv, "--artifact-bucket", "d", "--log-format", "json"])
    out, _ = capsys.readouterr()
    status = json.loads(out.strip().splitlines()[-1])
    assert (code, status["exit_code"]) == (5, 5)
    assert "connection failed after retries" in status["error"]
    assert "http://127.0.0.1:9" in status["error"]


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """os._exit's codes, raised as SystemExit so pytest survives what ends a real process.

    The real process exits are tested through the CLI in tests/integration (test_cli's
    Ctrl-C, test_stop's SIGTERM); this keeps the exit edge visible to `make mutation`.
    """
    codes: list[object] = []

    def record(code: object) -> None:
        codes.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", record)
    return codes


@pytest.mark.parametrize(
    ("signum", "code", "error"),
    [
        (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
        (signal.SIGTERM, 143, "received SIGTERM"),
    ],
)
def test_a_signal_during_the_run_exits_at_once_with_its_code(  # noqa: PLR0917 - fixtures
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    exits: list[object],
    signum: signal.Signals,
    code: int,
    error: str,
) -> None:
    """SIGINT/SIGTERM sent by the user's script stop the run: 130/143, status, nothing published."""
    script = tmp_path / "script.py"
    script.write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['DSJOB_OUTPUT_DIR'], 'o.csv').write_text('id\\n1\\n')\n"
        f"os.kill({os.getpid()}, {int(signum)})\n"
    )
    with pytest.raises(SystemExit):
        _run(tmp_path, capsys, "--script", str(script))
    out, err = capsys.readouterr()
    status = json.loads(out.strip().splitlines()[-1])
    assert exits == [code]
    assert (status["exit_code"], status["run_id"]) == (code, "r1")
    assert status["error"].startswith(error)
    assert status["error"].endswith("stopped without publishing")
    record = json.loads(err.splitlines()[-1])  # JSON logs: the error is one record
    assert (record["level"], record["message"], record["exit_code"]) == (
        "error",
        status["error"],
        status["exit_code"],
    )
    assert not (tmp_path / "out").exists()


def test_ctrl_c_outside_a_run_exits_130(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    exits: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in a command without the run's handlers (health, blocked on its SBOM) exits 130."""
    fifo = tmp_path / "sbom.fifo"
    os.mkfifo(fifo)  # opening it blocks until the signal: no race with the command's start
    monkeypatch.setenv("DSJOB_SBOM_FILE", str(fifo))
    # Ctrl-C's own handler, also where SIGINT is ignored (a shell's background job,
    # nohup); the autouse fixture puts the previous one back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread()
    done = threading.Event()

    def ctrl_c() -> None:
        # Aimed at the main thread, once it waits for the FIFO's writer: a signal sent
        # to the process may land on this thread, leaving the main one in open() for
        # good (it hung CI that way).
        wchan = Path(f"/proc/self/task/{main.native_id}/wchan")
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            if not wchan.exists() or wchan.read_text() == "wait_for_partner":
                break
            time.sleep(0.02)
        if not done.is_set():
            signal.pthread_kill(main.ident or 0, signal.SIGINT)

    sender = threading.Thread(target=ctrl_c)
    sender.start()
    try:
        with pytest.raises(SystemExit):
            cli.main(["health"])
    finally:
        done.set()
        sender.join()
    out, _ = capsys.readouterr()
    status = json.loads(out.strip().splitlines()[-1])
    assert exits == [130]
    assert status == {
        "status": "failed",
        "exit_code": 130,
        "error": "interrupted; stopped without publishing",
    }


def test_an_unhealthy_image_exits_1_without_an_exception(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dsjob health` returns its own 1 when a locked version differs from the installed one."""
    lock = tmp_path / "requirements.lock"
    lock.write_text("duckdb==0.0.1\n")
    code = cli.main(["health", "--lock", str(lock)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "FAIL" in out
    assert err.startswith("Error: unhealthy: ")
