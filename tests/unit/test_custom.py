"""Tests for dsjob.custom: real script subprocesses, timeouts, logs and SIGTERM forwarding."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dsjob.context import JobContext
from dsjob.custom import ScriptResult, run_script
from dsjob.errors import (
    MissingObjectError,
    ScriptTimeoutError,
    UserCodeError,
)
from dsjob.reaper import CGROUP_ROOT, Reaper
from dsjob.scriptoutputs import MAX_OUTPUT_DEPTH
from dsjob.workdir import remove_tree
from tests.support.paths import REPO

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx(tmp_path: Path) -> JobContext:
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.csv").write_text("id,name\n1, a \n,b\n1, a \n")
    return JobContext(
        input_path=work / "input.csv",
        model_path=None,
        output_dir=work / "out",
        run_id="run-1",
        work_dir=work,
    )


def _script(ctx: JobContext, body: str) -> Path:
    path = ctx.work_dir / "script.py"
    path.write_text(textwrap.dedent(body))
    return path


def _pid_alive(pid: int) -> bool:
    """True while pid runs; a zombie (killed, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_success_returns_outputs_and_logs_lines(
    ctx: JobContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A script using dsjob.context() writes outputs; its stdout/stderr lines are logged."""
    script = _script(
        ctx,
        """
        import sys
        import dsjob
        job = dsjob.context()
        print("rows:", len(job.input_path.read_text().splitlines()))
        print("a warning", file=sys.stderr)
        (job.output_dir / "result.csv").write_text(job.run_id)
        (job.output_dir / "nested").mkdir()
        (job.output_dir / "nested" / "b.txt").write_text("b")
        """,
    )
    with caplog.at_level(logging.INFO, logger="dsjob.script"):
        result = run_script(script, ctx, timeout=30)
    assert isinstance(result, ScriptResult)
    assert result.returncode == 0
    assert 0 < result.duration_s < 30
    assert result.output_files == [
        ctx.output_dir / "nested" / "b.txt",
        ctx.output_dir / "result.csv",
    ]
    assert (ctx.output_dir / "result.csv").read_text() == "run-1"
    lines = [
        (r.getMessage(), getattr(r, "stream", None))
        for r in caplog.records
        if r.name == "dsjob.script"
    ]
    assert ("rows: 4", "stdout") in lines
    assert ("a warning", "stderr") in lines


def test_failing_script_reports_exit_code_and_stderr_tail(ctx: JobContext) -> None:
    """A non-zero exit raises UserCodeError with the exit code and the last stderr lines."""
    script = _script(
        ctx,
        """
        import sys
        for i in range(30):
            print(f"noise {i}", file=sys.stderr)
        raise SystemExit("bad input: column 'id' missing")
        """,
    )
    with pytest.raises(UserCodeError) as excinfo:
        run_script(script, ctx, timeout=30)
    message = str(excinfo.value)
    assert "exited with code 1" in message
    assert "bad input: column 'id' missing" in message
    assert "noise 29" in message
    assert "noise 5\n" not in message, "only the tail of stderr belongs in the message"
    assert excinfo.value.exit_code == 4


@pytest.mark.parametrize(
    ("signum", "how"),
    [
        (signal.SIGKILL, "was killed by SIGKILL"),  # what the kernel's OOM killer sends
        (signal.SIGRTMIN + 6, f"was killed by signal {int(signal.SIGRTMIN) + 6}"),  # unnamed
    ],
)
def test_a_script_killed_by_a_signal_is_named_with_its_stderr_tail(
    ctx: JobContext, signum: int, how: str
) -> None:
    """A script ended by a signal (a real kill) names the signal and keeps its stderr lines."""
    script = _script(
        ctx,
        f"""
        import os, sys
        print("loading 3 GB", file=sys.stderr)
        print("", file=sys.stderr)
        print("still loading", file=sys.stderr, flush=True)
        os.kill(os.getpid(), {int(signum)})
        """,
    )
    with pytest.raises(UserCodeError) as excinfo:
        run_script(script, ctx, timeout=30)
    assert str(excinfo.value).endswith(f"{how}; last stderr lines:\nloading 3 GB\nstill loading")
    assert excinfo.value.exit_code == 4


def test_a_script_killed_without_a_word_says_so(ctx: JobContext) -> None:
    """A script killed before writing to stderr says there was no stderr output."""
    script = _script(ctx, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    with pytest.raises(UserCodeError, match=r"was killed by SIGKILL \(no stderr output\)$"):
        run_script(script, ctx, timeout=30)


def test_traceback_tail_is_in_the_message(ctx: JobContext) -> None:
    """An uncaught exception's last traceback line reaches the error message."""
    script = _script(ctx, "import json\njson.loads('{nope')\n")
    with pytest.raises(UserCodeError, match="JSONDecodeError"):
        run_script(script, ctx, timeout=30)


def test_no_outputs_is_a_user_code_error(ctx: JobContext) -> None:
    """A script that exits 0 without writing anything to the output dir fails."""
    script = _script(ctx, "print('did nothing')\n")
    with pytest.raises(UserCodeError, match="produced no output files in"):
        run_script(script, ctx, timeout=30)


def test_missing_script_is_named(ctx: JobContext) -> None:
    """A script path that does not exist is reported as a missing input."""
    with pytest.raises(MissingObjectError, match=r"nope\.py"):
        run_script(ctx.work_dir / "nope.py", ctx, timeout=30)


def test_hanging_script_times_out(ctx: JobContext) -> None:
    """A script running past the timeout is stopped and raises ScriptTimeoutError quickly."""
    script = _script(ctx, "import time\ntime.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(ScriptTimeoutError, match=r"timed out after 0\.5 s"):
        run_script(script, ctx, timeout=0.5, grace_s=2)
    assert time.monotonic() - started < 5, "stopped at the timeout, not at sleep(60)"


def test_script_ignoring_sigterm_is_killed_after_grace(ctx: JobContext) -> None:
    """A timed-out script that ignores SIGTERM, and its children, are SIGKILLed after the grace."""
    script = _script(
        ctx,
        """
        import pathlib, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pathlib.Path("pids").write_text(f"{child.pid}")
        time.sleep(60)
        """,
    )
    started = time.monotonic()
    with pytest.raises(ScriptTimeoutError):
        run_script(script, ctx, timeout=1, grace_s=0.5)
    elapsed = time.monotonic() - started
    assert elapsed > 1.4, "SIGKILL follows SIGTERM after the 0.5 s grace"
    assert elapsed < 8, "SIGKILL follows SIGTERM after the 0.5 s grace"
    grandchild = int((ctx.work_dir / "pids").read_text())
    deadline = time.monotonic() + 2
    while _pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(grandchild)


def test_script_imports_from_package_in_work_dir(ctx: JobContext) -> None:
    """With the work dir as cwd and on PYTHONPATH, `from package.preprocessing import *` works."""
    package = ctx.work_dir / "package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "preprocessing.py").write_text("def shout(s):\n    return s.upper()\n")
    script = _script(
        ctx,
        """
        import os
        from package.preprocessing import *
        import dsjob
        out = dsjob.context().output_dir
        (out / "x.txt").write_text(shout("ok") + " " + os.getcwd())
        """,
    )
    # A script living outside the work dir still finds the package (PYTHONPATH, not sys.path[0]).
    elsewhere = ctx.work_dir.parent / "elsewhere"
    elsewhere.mkdir()
    moved = script.rename(elsewhere / "script.py")
    run_script(moved, ctx, timeout=30)
    assert (ctx.output_dir / "x.txt").read_text() == f"OK {ctx.work_dir}"


def test_extra_env_reaches_script_and_handler_is_restored(ctx: JobContext) -> None:
    """extra_env is visible to the script, and our SIGTERM handler is gone afterwards."""

    def mine(signum: int, frame: object) -> None:
        """Stand-in for the job's own handler."""

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        script = _script(
            ctx,
            """
            import os, dsjob
            (dsjob.context().output_dir / "e.txt").write_text(os.environ["MY_FLAG"])
            """,
        )
        run_script(script, ctx, timeout=30, extra_env={"MY_FLAG": "on"})
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (ctx.output_dir / "e.txt").read_text() == "on"


_HELPER = """
import sys
from pathlib import Path
from dsjob.context import JobContext
from dsjob.custom import run_script
from dsjob.errors import DsjobError

work = Path(sys.argv[1])
ctx = JobContext(work / "input.csv", None, work / "out", "run-t", work)
try:
    run_script(work / "script.py", ctx, timeout=60, grace_s=float(sys.argv[2]))
except DsjobError as exc:
    print(type(exc).__name__, exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def _run_helper_and_sigterm(ctx: JobContext, grace_s: float) -> subprocess.CompletedProcess[str]:
    """Start a dsjob-like process running the script, SIGTERM it once the script is up."""
    helper = subprocess.Popen(
        [sys.executable, "-c", _HELPER, str(ctx.work_dir), str(grace_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = ctx.work_dir / "started"
    deadline = time.monotonic() + 10
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not started.exists():
        helper.kill()
        _, err = helper.communicate()
        pytest.fail(f"the script never started: {err}")
    helper.send_signal(signal.SIGTERM)
    try:
        out, err = helper.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.communicate()
        raise
    return subprocess.CompletedProcess(helper.args, helper.returncode, out, err)


def test_sigterm_is_forwarded_to_the_script(ctx: JobContext) -> None:
    """SIGTERM to the job reaches the script, which can clean up; the job exits 143."""
    _script(
        ctx,
        """
        import pathlib, signal, sys, time
        def stop(signum, frame):
            pathlib.Path("got-signal").write_text(signal.Signals(signum).name)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path("out").mkdir(exist_ok=True)
        pathlib.Path("out/partial.csv").write_text("half")
        pathlib.Path("started").write_text("")
        time.sleep(30)
        """,
    )
    started = time.monotonic()
    done = _run_helper_and_sigterm(ctx, grace_s=20)
    assert done.returncode == 143, done.stderr
    assert "TerminatedError" in done.stderr
    assert "stopped without publishing" in done.stderr
    assert (ctx.work_dir / "got-signal").read_text() == "SIGTERM"
    # The script exited at once, so the job did not sit out the 20 s grace period.
    assert time.monotonic() - started < 10


def test_sigterm_ignored_by_script_is_killed_after_grace(ctx: JobContext) -> None:
    """A script ignoring the forwarded SIGTERM is killed after the grace; the job exits 143."""
    _script(
        ctx,
        """
        import os, pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path("pid").write_text(str(os.getpid()))
        pathlib.Path("started").write_text("")
        time.sleep(30)
        """,
    )
    started = time.monotonic()
    done = _run_helper_and_sigterm(ctx, grace_s=0.5)
    assert done.returncode == 143, done.stderr
    assert time.monotonic() - started < 8
    assert not _pid_alive(int((ctx.work_dir / "pid").read_text()))


def test_sigterm_outside_main_thread_is_not_hooked(ctx: JobContext) -> None:
    """run_script from a worker thread still works (no signal handler can be installed there)."""
    script = _script(ctx, "import dsjob\n(dsjob.context().output_dir / 'o').write_text('1')\n")
    results: list[ScriptResult] = []
    worker = threading.Thread(target=lambda: results.append(run_script(script, ctx, timeout=30)))
    worker.start()
    worker.join(timeout=10)
    assert len(results) == 1
    assert results[0].output_files == [ctx.output_dir / "o"]


EXAMPLES = REPO / "examples"


def test_example_script_runs_without_pyarrow(ctx: JobContext, tmp_path: Path) -> None:
    """examples/script.py + the packed examples/package clean the sample data with no pyarrow."""
    from dsjob.archive import safe_extract  # noqa: PLC0415
    from dsjob.pack import build_package  # noqa: PLC0415
    from dsjob.sample import write_members_csv  # noqa: PLC0415

    write_members_csv(ctx.input_path, 300, seed=7)
    tarball = tmp_path / "package.tar.gz"
    build_package(EXAMPLES / "package", tarball)
    safe_extract(tarball, ctx.work_dir)
    # The production image has no pyarrow: make it unimportable for the script.
    blocker = tmp_path / "no-pyarrow" / "pyarrow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('pyarrow is not in the runtime')\n")
    result = run_script(
        EXAMPLES / "script.py",
        ctx,
        timeout=60,
        extra_env={"PYTHONPATH": f"{ctx.work_dir}{os.pathsep}{blocker.parent}"},
    )
    assert result.output_files == [ctx.output_dir / "members_clean.parquet"]
    import duckdb  # noqa: PLC0415

    found = duckdb.execute(
        "SELECT count(*), count(DISTINCT id), count(*) - count(id), min(joined_year) "
        "FROM read_parquet(?)",
        [str(result.output_files[0])],
    ).fetchone()
    assert found is not None
    rows, ids, nulls, years = found
    assert 250 < rows < 300, "null ids and duplicates are dropped"
    assert ids == rows
    assert nulls == 0
    assert years >= 2015


def _cgroup_writable() -> bool:
    reaper = Reaper(CGROUP_ROOT)
    try:
        return reaper.uses_cgroup
    finally:
        reaper.kill_all(os.getpid())


# Double fork with setsid: the grandchild leaves the script's session and process
# group and is reparented away from the script, then keeps writing for 30 s.
_ESCAPE = """
import os, pathlib, time
import dsjob
out = dsjob.context().output_dir
(out / "result.txt").write_text("final")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        pathlib.Path("escaped-pid").write_text(str(os.getpid()))
        for _ in range(300):
            time.sleep(0.1)
            (out / "result.txt").write_text("rewritten by the escaped grandchild")
    os._exit(0)
while not pathlib.Path("escaped-pid").exists():
    time.sleep(0.01)
"""


@pytest.mark.parametrize("mode", ["cgroup", "process tree"])
def test_grandchild_escaping_with_setsid_is_killed(
    ctx: JobContext, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A grandchild that left the script's session with setsid is dead once run_script returns."""
    if mode == "cgroup" and not _cgroup_writable():
        pytest.skip("no writable cgroup on this machine")
    script = _script(ctx, _ESCAPE)
    with caplog.at_level(logging.INFO, logger="dsjob.custom"):
        run_script(script, ctx, timeout=30, cgroup_root=CGROUP_ROOT if mode == "cgroup" else None)
    escaped = int((ctx.work_dir / "escaped-pid").read_text())
    assert not _pid_alive(escaped)
    kinds = [getattr(r, "containment", "") for r in caplog.records if r.name == "dsjob.custom"]
    assert kinds[0].startswith(mode), kinds
    assert any("left running" in r.getMessage() for r in caplog.records)


def test_script_environment_drops_job_settings(
    ctx: JobContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's own DSJOB_* settings stay out of the script's env; context and AWS vars stay in."""
    monkeypatch.setenv("DSJOB_OUTPUT_BUCKET", "job-only")
    monkeypatch.setenv("DSJOB_PARAM_PREFIX", "/secret/prefix")
    script = _script(
        ctx,
        """
        import json, os, dsjob
        names = sorted(k for k in os.environ if k.startswith(("DSJOB_", "AWS_")))
        (dsjob.context().output_dir / "env.json").write_text(json.dumps(names))
        """,
    )
    run_script(script, ctx, timeout=30)
    names = json.loads((ctx.output_dir / "env.json").read_text())
    assert names == [
        "AWS_ACCESS_KEY_ID",
        "AWS_CONFIG_FILE",
        "AWS_DEFAULT_REGION",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SHARED_CREDENTIALS_FILE",
        "DSJOB_INPUT_PATH",
        "DSJOB_OUTPUT_DIR",
        "DSJOB_PROCESS_TAG",
        "DSJOB_RUN_ID",
        "DSJOB_WORK_DIR",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("os.symlink('/etc/passwd', out / 'report.txt')", r"symlink .*report\.txt -> /etc/passwd"),
        ("os.symlink('data.csv', out / 'link.csv')", r"symlink .*link\.csv -> data\.csv"),
        (
            "(out / 'sub').mkdir(); os.symlink('/etc', out / 'sub' / 'etc')",
            r"symlink .*sub/etc -> /etc",
        ),
        ("os.mkfifo(out / 'pipe')", r"pipe in its output dir, which is not a regular file"),
    ],
)
def test_outputs_that_are_not_regular_files_fail(ctx: JobContext, body: str, message: str) -> None:
    """A symlink (absolute or relative, file or dir) or a fifo in the output dir is exit 4."""
    script = _script(
        ctx,
        f"""
        import os, dsjob
        out = dsjob.context().output_dir
        (out / "data.csv").write_text("id\\n1\\n")
        {body}
        """,
    )
    with pytest.raises(UserCodeError, match=message) as excinfo:
        run_script(script, ctx, timeout=30)
    assert excinfo.value.exit_code == 4


def test_output_tree_deeper_than_the_cap_fails_fast(ctx: JobContext) -> None:
    """An output dir nested 1,100 levels deep is refused (exit 4) without walking it recursively."""
    script = _script(
        ctx,
        """
        import os, dsjob
        os.chdir(dsjob.context().output_dir)
        for _ in range(1100):
            os.mkdir("d")
            os.chdir("d")
        open("deep.txt", "w").write("x")
        """,
    )
    started = time.monotonic()
    try:
        with pytest.raises(UserCodeError, match=f"deeper than {MAX_OUTPUT_DEPTH} levels at d/d/"):
            run_script(script, ctx, timeout=30)
        assert time.monotonic() - started < 10
    finally:
        # pytest's own tmp cleanup (shutil.rmtree) would hit a RecursionError on this tree.
        assert remove_tree(ctx.output_dir)
