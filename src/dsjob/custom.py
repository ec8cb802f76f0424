"""Run the user's script.py as a supervised subprocess: logs, timeout, SIGTERM forwarding."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from dsjob.context import JobContext, context_env
from dsjob.errors import MissingObjectError, ScriptTimeoutError, TerminatedError, UserCodeError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path
    from types import FrameType

LOGGER = logging.getLogger(__name__)
SCRIPT_LOGGER = logging.getLogger("dsjob.script")

# ECS sends SIGKILL 30 s after SIGTERM; 20 s leaves time to report the failure.
DEFAULT_GRACE_S = 20.0
STDERR_TAIL_LINES = 10
# Short enough that a SIGTERM's grace deadline is noticed promptly, long enough to be idle.
_POLL_S = 0.1
# A line without a newline (a \r progress bar) is logged in pieces of this size.
_MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ScriptResult:
    """How a successful script run went.

    Attributes:
        returncode: always 0 for a returned result (failures raise).
        duration_s: wall time of the subprocess, seconds.
        output_files: every regular file under the output dir, sorted.
    """

    returncode: int
    duration_s: float
    output_files: list[Path] = field(default_factory=list)


@dataclass
class _Stop:
    """Why and when the runner decided to stop the script."""

    reason: str | None = None
    at: float = 0.0

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.at = time.monotonic()


def run_script(
    script: Path,
    ctx: JobContext,
    *,
    timeout: float,
    python: str = sys.executable,
    extra_env: Mapping[str, str] | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> ScriptResult:
    """Run ``script`` with ``python`` in ``ctx.work_dir`` and return what it produced.

    The child starts in its own session (so its whole process group can be
    signalled), with the work dir as cwd and first on PYTHONPATH, and the DSJOB_*
    variables ``dsjob.context()`` reads. Its stdout and stderr are logged line by
    line on the ``dsjob.script`` logger with ``extra={"stream": "stdout"|"stderr"}``.
    While it runs in the main thread, SIGTERM to this process is forwarded to the
    child's group; the previous SIGTERM handler is restored afterwards.

    Args:
        script: the script to run.
        ctx: the job context handed to the script through the environment.
        timeout: seconds before the script is stopped.
        python: the interpreter to run it with.
        extra_env: more environment variables for the child (override the rest).
        grace_s: after SIGTERM (timeout or forwarded), seconds before SIGKILL.

    Raises:
        ScriptTimeoutError: the script ran past ``timeout``.
        TerminatedError: this process got SIGTERM while the script ran.
        UserCodeError: non-zero exit (code and stderr tail in the message), or
            exit 0 with no file in ``ctx.output_dir``.
        MissingObjectError: the script file does not exist.
    """
    if not script.is_file():
        raise MissingObjectError(str(script))
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    env = _child_env(ctx, extra_env)
    stop = _Stop()
    LOGGER.info(
        "starting script",
        extra={"script": str(script), "timeout_s": timeout, "work_dir": str(ctx.work_dir)},
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [python, str(script.resolve())],
        cwd=ctx.work_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    readers: list[threading.Thread] = []
    try:
        readers.append(_reader(proc.stdout, "stdout", None))
        readers.append(_reader(proc.stderr, "stderr", tail))
        with _forward_sigterm(proc, stop):
            returncode = _supervise(proc, stop, deadline=started + timeout, grace_s=grace_s)
    finally:
        # Whatever happened, leave no process of the script's group behind
        # (a grandchild holding the pipes open would also block the readers).
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        for reader in readers:
            reader.join(timeout=5)
    duration = time.monotonic() - started
    name = script.name
    if stop.reason == "sigterm":
        raise TerminatedError(
            f"stopped by SIGTERM while {name} was running ({duration:.1f} s); nothing published"
        )
    if stop.reason == "timeout":
        raise ScriptTimeoutError(f"{name} timed out after {timeout:g} s and was stopped")
    if returncode != 0:
        raise UserCodeError(_failure_message(name, returncode, tail))
    outputs = sorted(p for p in ctx.output_dir.rglob("*") if p.is_file())
    if not outputs:
        raise UserCodeError(f"{name} exited 0 but produced no output files in {ctx.output_dir}")
    LOGGER.info(
        "script finished",
        extra={"script": str(script), "duration_s": round(duration, 3), "outputs": len(outputs)},
    )
    return ScriptResult(returncode=returncode, duration_s=duration, output_files=outputs)


def _child_env(ctx: JobContext, extra_env: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(context_env(ctx))
    inherited = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{ctx.work_dir}{os.pathsep}{inherited}" if inherited else str(ctx.work_dir)
    # Unbuffered, so print() lines reach the job log as they happen, not at exit.
    env["PYTHONUNBUFFERED"] = "1"
    if extra_env:
        env.update(extra_env)
    return env


def _reader(pipe: IO[bytes] | None, stream: str, tail: deque[str] | None) -> threading.Thread:
    def pump() -> None:
        if pipe is None:
            return
        with pipe:
            for raw in iter(lambda: pipe.readline(_MAX_LINE_BYTES), b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if tail is not None:
                    tail.append(line)
                SCRIPT_LOGGER.info(line, extra={"stream": stream})

    thread = threading.Thread(target=pump, name=f"dsjob-script-{stream}", daemon=True)
    thread.start()
    return thread


def _supervise(
    proc: subprocess.Popen[bytes], stop: _Stop, *, deadline: float, grace_s: float
) -> int:
    """Wait for the child; on timeout SIGTERM its group, after the grace period SIGKILL."""
    while True:
        try:
            return proc.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if stop.reason is None and now >= deadline:
            LOGGER.warning("script timed out; sending SIGTERM", extra={"pid": proc.pid})
            stop.request("timeout")
            _signal_group(proc, signal.SIGTERM)
        elif stop.reason is not None and now >= stop.at + grace_s:
            LOGGER.warning("script ignored SIGTERM; sending SIGKILL", extra={"pid": proc.pid})
            _signal_group(proc, signal.SIGKILL)
            return proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The child leads its own session, so its pid is its process group id; the
    # group outlives the leader while any of its children is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


@contextlib.contextmanager
def _forward_sigterm(proc: subprocess.Popen[bytes], stop: _Stop) -> Iterator[None]:
    """Forward SIGTERM to the child's group for the duration of the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        LOGGER.debug("not in the main thread; SIGTERM is not forwarded to the script")
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 -- signal API
        LOGGER.warning("SIGTERM received; forwarding to the script", extra={"pid": proc.pid})
        stop.request("sigterm")
        _signal_group(proc, signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        # None means the handler was installed from C; SIG_DFL is the closest we can restore.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _failure_message(name: str, returncode: int, tail: deque[str]) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with code {returncode}"
    lines = [line for line in tail if line.strip()]
    if not lines:
        return f"{name} {how} (no stderr output)"
    return f"{name} {how}; last stderr lines:\n" + "\n".join(lines)
