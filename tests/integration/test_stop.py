"""Signals, escapes and cleanup through the real CLI: `dsjob run` in local mode, a subprocess."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dsjob.workdir import remove_tree
from tests.support.paths import DSJOB

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ on Linux), spelled out for mypy
_PIPE_BYTES = 4096  # the smallest pipe Linux allows: one page


@pytest.fixture(autouse=True)
def _remove_deep_trees(tmp_path: Path) -> Iterator[None]:
    """Remove deep leftovers: pytest's tmp cleanup (shutil.rmtree) would hit a RecursionError."""
    yield
    remove_tree(tmp_path)


def _env() -> dict[str, str]:
    """The user's environment without DSJOB_* settings and without any AWS endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSJOB_", "AWS_ENDPOINT"))}
    env["DSJOB_LOG_FORMAT"] = "json"
    return env


def _job(tmp_path: Path, *extra: str) -> list[str]:
    data = tmp_path / "people.csv"
    if not data.exists():
        data.write_text("id,name\n1,Ann\n2,Bob\n3,Cid\n")
    (tmp_path / "work-root").mkdir(exist_ok=True)
    return [
        str(DSJOB),
        "run",
        "--input",
        str(data),
        "--output-dir",
        str(tmp_path / "out"),
        "--work-root",
        str(tmp_path / "work-root"),
        *extra,
    ]


def _status(stdout: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return parsed


def _published(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def _script(tmp_path: Path, body: str) -> str:
    script = tmp_path / "script.py"
    script.write_text(body)
    return str(script)


def _blocked_in_stderr_write(pid: int) -> bool:
    """True while the process's main thread sits in write(2, ...)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return fields[:2] == ["1", "0x2"]


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_sigterm_while_stderr_is_blocked_exits_143_and_publishes_nothing(tmp_path: Path) -> None:
    """SIGTERM landing inside a log write on a full stderr pipe still stops the job with 143."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_BYTES)
    # Fill the pipe before the job starts, as a stalled log driver would: the job's
    # first log line then blocks its main thread inside logging's emit().
    os.write(write_end, b"#" * _PIPE_BYTES)
    proc = subprocess.Popen(
        _job(tmp_path, "--run-id", "blocked"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=write_end,
        text=True,
    )
    os.close(write_end)
    drained: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while not _blocked_in_stderr_write(proc.pid):
            assert proc.poll() is None, "the job finished without ever blocking on stderr"
            assert time.monotonic() < deadline, "the job never blocked on its stderr"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        # Now the log driver catches up; the job must still honour the SIGTERM.
        reader = threading.Thread(target=lambda: drained.append(_read_all(read_end)))
        reader.start()
        stdout, _ = proc.communicate(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
    log = b"".join(drained).decode(errors="replace")
    assert proc.returncode == 143, log[-2000:]
    assert _status(stdout)["exit_code"] == 143
    assert "stopped without publishing" in log
    assert _published(tmp_path) == []


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_after_the_manifest_reports_success(tmp_path: Path) -> None:
    """SIGTERM once "manifest written" is logged never reports a failure for a committed run."""
    proc = subprocess.Popen(
        _job(tmp_path, "--run-id", "committed"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    log = []
    for line in proc.stderr:
        log.append(line)
        if "manifest written" in line:
            proc.send_signal(signal.SIGTERM)
            break
    stdout, rest = proc.communicate(timeout=60)
    log.append(rest)
    text = "".join(log)
    assert proc.returncode == 0, text[-2000:]
    assert _status(stdout)["status"] == "succeeded"
    assert "stopped without publishing" not in text
    assert "manifests/committed.json" in _published(tmp_path)


_ESCAPE = """
import os, pathlib, time
import dsjob
out = dsjob.context().output_dir
(out / "result.txt").write_text("final")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        pathlib.Path("{pidfile}").write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)
            for path in pathlib.Path("{out}").rglob("result_*.txt"):
                path.write_text("rewritten after publish")
    os._exit(0)
while not pathlib.Path("{pidfile}").exists():
    time.sleep(0.01)
"""


def test_grandchild_escaping_with_setsid_is_gone_and_output_unchanged(tmp_path: Path) -> None:
    """A double-forked setsid grandchild of script.py is dead after the run; outputs are intact."""
    pidfile = tmp_path / "escaped.pid"
    body = _ESCAPE.format(pidfile=pidfile, out=tmp_path / "out")
    proc = subprocess.run(
        [*_job(tmp_path, "--run-id", "escape"), "--script", _script(tmp_path, body)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    escaped = int(pidfile.read_text())
    assert not _pid_alive(escaped)
    published = list((tmp_path / "out").glob("result_*.txt"))
    assert [p.read_text() for p in published] == ["final"]
    assert "killed processes the script left running" in proc.stderr


def test_symlink_output_fails_with_4_and_publishes_nothing(tmp_path: Path) -> None:
    """A symlink script.py leaves in its output dir exits 4 naming it; nothing is published."""
    body = (
        "import os, dsjob\n"
        "out = dsjob.context().output_dir\n"
        "(out / 'data.csv').write_text('id\\n1\\n')\n"
        "os.symlink('/etc/passwd', out / 'report.txt')\n"
    )
    proc = subprocess.run(
        [*_job(tmp_path, "--run-id", "link"), "--script", _script(tmp_path, body)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "report.txt -> /etc/passwd" in _status(proc.stdout)["error"]
    assert _published(tmp_path) == []


def test_deep_tree_left_in_the_work_dir_is_removed_and_the_run_succeeds(tmp_path: Path) -> None:
    """1,100 nested directories a script leaves in the work dir are removed; the run exits 0."""
    body = (
        "import os, dsjob\n"
        "ctx = dsjob.context()\n"
        "(ctx.output_dir / 'data.csv').write_text('id\\n1\\n')\n"
        "(ctx.output_dir / 'where.txt').write_text(str(ctx.work_dir))\n"
        "os.chdir(ctx.work_dir)\n"
        "for _ in range(1100):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
    )
    proc = subprocess.run(
        [*_job(tmp_path, "--run-id", "deep"), "--script", _script(tmp_path, body)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The tree was made in --work-root (not elsewhere), so its emptiness means removal.
    [where] = (tmp_path / "out").glob("where_*.txt")
    assert Path(where.read_text()).parent == tmp_path / "work-root"
    assert list((tmp_path / "work-root").iterdir()) == []
