"""Shared fixtures: an isolated environment for every test, a moto server, the skip policy."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.support.credentials import FAKE_ENV
from tests.support.emulator import LocalServe, start_local_serve
from tests.support.paths import DSJOB, REPO
from tests.support.skips import (  # noqa: F401 -- pytest finds hooks by name in conftest
    pytest_configure,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

# Re-exported for test modules that import them from here.
__all__ = ["DSJOB", "REPO", "LocalServe", "start_local_serve"]


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
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))


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
    from dsjob import emulator  # noqa: PLC0415
    from dsjob.aws import Clients  # noqa: PLC0415

    _serve.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", _serve.endpoint)
    emulator.seed(Clients())
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return _serve
