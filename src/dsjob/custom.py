"""Run the user's script.py as a supervised subprocess: logs, timeout, stop, containment.

The script's environment is the job's, minus the job's own ``DSJOB_*`` settings
(bucket names, SSM prefix, flags: a script must not depend on how the job was
configured), plus:

- ``DSJOB_INPUT_PATH``, ``DSJOB_OUTPUT_DIR``, ``DSJOB_RUN_ID``, ``DSJOB_WORK_DIR``
  and, with a model, ``DSJOB_MODEL_PATH``: what ``dsjob.context()`` reads;
- ``DSJOB_PROCESS_TAG``: a random tag that marks the script's processes;
- ``PYTHONPATH`` with the work dir first (the extracted package imports) and
  ``PYTHONUNBUFFERED=1`` (lines reach the log as they are printed).

Everything else is kept on purpose, AWS region and credentials included: the
script is trusted like the job (it is reviewed and shipped by the same team, and
may read S3 itself), so hiding the task role's credentials would protect nothing.
"""

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

from dsjob import stop
from dsjob.context import JobContext, context_env
from dsjob.errors import MissingObjectError, ScriptTimeoutError, UserCodeError
from dsjob.reaper import CGROUP_ROOT, TAG_ENV, Reaper
from dsjob.scriptoutputs import regular_outputs

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

LOGGER = logging.getLogger(__name__)
SCRIPT_LOGGER = logging.getLogger("dsjob.script")

# ECS sends SIGKILL 30 s after SIGTERM; 20 s leaves time to report the failure.
DEFAULT_GRACE_S = 20.0
STDERR_TAIL_LINES = 10
# Short enough that a stop request or the grace deadline is noticed promptly.
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
    cgroup_root: Path | None = CGROUP_ROOT,
) -> ScriptResult:
    """Run ``script`` with ``python`` in ``ctx.work_dir`` and return what it produced.

    The child starts in its own session (so its process group can be signalled)
    and, where one is writable, in a cgroup of its own (see ``dsjob.reaper``); when
    it ends, every process it started is killed, even one that left with
    ``setsid``. Its stdout and stderr are logged line by line on the
    ``dsjob.script`` logger with ``extra={"stream": "stdout"|"stderr"}``. A stop
    request (``dsjob.stop``: SIGTERM or Ctrl-C to this process) is forwarded to the
    script's group as SIGTERM; if no handler is installed, run_script installs one
    for its own duration (main thread only). The module docstring lists the
    script's environment.

    Args:
        script: the script to run.
        ctx: the job context handed to the script through the environment.
        timeout: seconds before the script is stopped.
        python: the interpreter to run it with.
        extra_env: more environment variables for the child (override the rest).
        grace_s: after SIGTERM (timeout or forwarded), seconds before SIGKILL.
        cgroup_root: the cgroup mount; None tracks the process tree instead.

    Raises:
        ScriptTimeoutError: the script ran past ``timeout``.
        TerminatedError: this process got SIGTERM while the script ran.
        InterruptedRunError: this process got Ctrl-C while the script ran.
        UserCodeError: non-zero exit (code and stderr tail in the message), exit 0
            with no file in ``ctx.output_dir``, or an output that is not a regular
            file (a symlink, a fifo) or is nested too deep.
        MissingObjectError: the script file does not exist.
    """
    if not script.is_file():
        raise MissingObjectError(str(script))
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    reaper = Reaper(cgroup_root)
    env = _child_env(ctx, extra_env, reaper.tag)
    state = _Stop()
    started = time.monotonic()
    proc = _start(reaper, [python, str(script.resolve())], ctx.work_dir, env)
    LOGGER.info(
        "started script",
        extra={
            "script": str(script),
            "timeout_s": timeout,
            "work_dir": str(ctx.work_dir),
            "pid": proc.pid,
            "containment": reaper.kind,
        },
    )
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
    readers: list[threading.Thread] = []
    try:
        readers.append(_reader(proc.stdout, "stdout", None))
        readers.append(_reader(proc.stderr, "stderr", tail))
        with _stop_handlers():
            returncode = _supervise(proc, state, deadline=started + timeout, grace_s=grace_s)
    finally:
        # Whatever happened, leave no process of the script behind (one holding
        # the pipes open would also block the readers, one writing could change
        # an output after it was verified).
        leftovers = reaper.kill_all(proc.pid)
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        for reader in readers:
            reader.join(timeout=5)
    if leftovers:
        LOGGER.warning(
            "killed processes the script left running",
            extra={"count": leftovers, "containment": reaper.kind},
        )
    duration = time.monotonic() - started
    name = script.name
    if state.reason == "stop":
        stop.checkpoint(f"while {name} was running ({duration:.1f} s)")
    if state.reason == "timeout":
        raise ScriptTimeoutError(f"{name} timed out after {timeout:g} s and was stopped")
    if returncode != 0:
        raise UserCodeError(_failure_message(name, returncode, tail))
    outputs = regular_outputs(ctx.output_dir, name)
    if not outputs:
        raise UserCodeError(f"{name} exited 0 but produced no output files in {ctx.output_dir}")
    LOGGER.info(
        "script finished",
        extra={"script": str(script), "duration_s": round(duration, 3), "outputs": len(outputs)},
    )
    return ScriptResult(returncode=returncode, duration_s=duration, output_files=outputs)


def _start(
    reaper: Reaper, argv: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the child; in cgroup mode it waits on a pipe until it is in its cgroup."""
    go_r, go_w = os.pipe() if reaper.uses_cgroup else (None, None)
    try:
        proc = subprocess.Popen(
            reaper.command(argv, go_r),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=() if go_r is None else (go_r,),
        )
        if go_w is not None:
            reaper.adopt(proc.pid)
            os.write(go_w, b"1")
    finally:
        for fd in (go_r, go_w):
            if fd is not None:
                os.close(fd)
    return proc


def _child_env(ctx: JobContext, extra_env: Mapping[str, str] | None, tag: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSJOB_")}
    env.update(context_env(ctx))
    env[TAG_ENV] = tag
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
    proc: subprocess.Popen[bytes], state: _Stop, *, deadline: float, grace_s: float
) -> int:
    """Wait for the child; on timeout or a stop request SIGTERM its group, later SIGKILL."""
    while True:
        try:
            return proc.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if state.reason is None and stop.requested() is not None:
            state.request("stop")
            LOGGER.warning("stop requested; sending SIGTERM to the script", extra={"pid": proc.pid})
            _signal_group(proc, signal.SIGTERM)
        elif state.reason is None and now >= deadline:
            LOGGER.warning("script timed out; sending SIGTERM", extra={"pid": proc.pid})
            state.request("timeout")
            _signal_group(proc, signal.SIGTERM)
        elif state.reason is not None and now >= state.at + grace_s:
            LOGGER.warning("script ignored SIGTERM; sending SIGKILL", extra={"pid": proc.pid})
            _signal_group(proc, signal.SIGKILL)
            return proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    # The child leads its own session, so its pid is its process group id; the
    # group outlives the leader while any of its children is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


@contextlib.contextmanager
def _stop_handlers() -> Iterator[None]:
    """Make sure a stop request reaches the wait loop: install dsjob.stop's handlers if needed."""
    if stop.installed() or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    stop.reset()
    stop.install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None means the handler was installed from C; SIG_DFL is the closest we can restore.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


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
