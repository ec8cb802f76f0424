"""The embedded AWS for tests: a `dsjob local serve` subprocess, seeded, on a free port."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

from tests.support.credentials import FAKE_ENV
from tests.support.paths import DSJOB

# Running emulators' endpoints (comma-separated) to attach to instead of starting one:
# `make mutation` runs one per mutmut worker, and each test process takes one no
# other process holds (see _take).
SHARED_ENV = "MUTATION_SHARED_EMULATOR"
# The shared emulator this process took: (the taker's pid, endpoint, its lock file).
_TAKEN: list[tuple[int, str, IO[str]]] = []


class LocalServe:
    """A `dsjob local serve` subprocess: the embedded AWS, seeded, on a free port."""

    def __init__(self, proc: subprocess.Popen[str] | None, endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for subprocesses talking to this emulator."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSJOB_")}
        env.update(FAKE_ENV, AWS_ENDPOINT_URL=self.endpoint, DSJOB_LOG_FORMAT="json")
        env.update(extra)
        return env

    def reset(self) -> None:
        """Wipe every resource (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            if answer.status != 200:
                msg = f"moto reset answered {answer.status}"
                raise RuntimeError(msg)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then kill); a shared one is left running, and released."""
        if self.proc is None:
            _release()
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_local_serve(*args: str) -> LocalServe:
    """Start `dsjob local serve` and wait for its export line (or attach to a shared one)."""
    shared = os.environ.get(SHARED_ENV)
    if shared and not args:
        return LocalServe(None, _take(shared.split(",")))
    proc = subprocess.Popen(
        [str(DSJOB), "local", "serve", "--log-format", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"AWS_ENDPOINT_URL=(\S+)", line)
        if match:
            return LocalServe(proc, match.group(1))
    proc.wait(5)
    msg = f"dsjob local serve exited {proc.returncode} before printing its endpoint"
    raise RuntimeError(msg)


def _take(endpoints: list[str]) -> str:
    """Lock one of `endpoints` that no other process holds, until released or this process exits.

    Every test resets the emulator it uses, so two processes must never share one.
    The kernel drops an flock when its holder exits, os._exit included (mutmut's
    workers leave that way). mutmut's fork server runs whole test sessions (stats,
    clean run) before it forks the workers: its session's end releases its lock
    (LocalServe.stop), and a lock inherited through fork is never reused.
    """
    if _TAKEN and _TAKEN[0][0] == os.getpid():  # a second session in this process
        return _TAKEN[0][1]
    _TAKEN.clear()  # inherited from the parent: the parent's, not this process's
    locks = Path(tempfile.gettempdir())
    while True:
        for endpoint in endpoints:
            port = endpoint.rsplit(":", 1)[-1]
            handle = (locks / f"dsjob-emulator-{port}.lock").open("a", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _TAKEN.append((os.getpid(), endpoint, handle))
            return endpoint
        time.sleep(0.05)


def _release() -> None:
    """Give back the shared emulator this process took (none: nothing to do)."""
    if _TAKEN and _TAKEN[0][0] == os.getpid():
        fcntl.flock(_TAKEN[0][2], fcntl.LOCK_UN)
        _TAKEN[0][2].close()
    _TAKEN.clear()
