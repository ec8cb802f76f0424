"""Shared fixtures: an isolated environment for every test, a moto server for integration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
DSJOB = Path(sys.executable).parent / "dsjob"


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No real AWS profile, no stray DSJOB_* settings: every test starts from the same place."""
    for name in list(os.environ):
        if name.startswith(("DSJOB_", "AWS_")) and name not in (
            "DSJOB_REQUIRE_ENGINE",
            "DSJOB_REQUIRE_BROWSER",
            "DSJOB_REQUIRE_DEVCONTAINER",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))


class LocalServe:
    """A `dsjob local serve` subprocess: the embedded AWS, seeded, on a free port."""

    def __init__(self, proc: subprocess.Popen[str], endpoint: str) -> None:
        self.proc = proc
        self.endpoint = endpoint

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for subprocesses talking to this emulator."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DSJOB_")}
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            DSJOB_LOG_FORMAT="json",
        )
        env.update(extra)
        return env

    def stop(self) -> None:
        """Stop the server (SIGTERM, then kill)."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_local_serve(*args: str) -> LocalServe:
    """Start `dsjob local serve` and wait for its export line."""
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


@pytest.fixture(scope="session")
def _serve() -> Iterator[LocalServe]:
    """One `dsjob local serve` per session (starting moto costs seconds)."""
    server = start_local_serve()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def local_aws(_serve: LocalServe, monkeypatch: pytest.MonkeyPatch) -> LocalServe:
    """The session's emulator, wiped (moto's reset API) and freshly seeded for this test."""
    from dsjob import local  # noqa: PLC0415
    from dsjob.aws import Clients  # noqa: PLC0415

    with urllib.request.urlopen(
        urllib.request.Request(f"{_serve.endpoint}/moto-api/reset", method="POST"), timeout=30
    ) as answer:
        assert answer.status == 200
    monkeypatch.setenv("AWS_ENDPOINT_URL", _serve.endpoint)
    local.seed(Clients())
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return _serve
