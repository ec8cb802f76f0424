"""The embedded AWS for tests: a `dsjob local serve` subprocess, seeded, on a free port."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request

from tests.support.credentials import FAKE_ENV
from tests.support.paths import DSJOB

# A running emulator's endpoint to attach to instead of starting one (`make mutation`
# runs one for all the mutants of a module, one mutant at a time).
SHARED_ENV = "MUTATION_SHARED_EMULATOR"


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
        """Stop the server (SIGTERM, then kill); a shared one is left running."""
        if self.proc is None:
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
        return LocalServe(None, shared)
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
