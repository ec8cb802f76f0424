"""Skips never hide work in CI: with CI=true, a skip not in tests/skips.toml fails the session.

tests/conftest.py imports the hooks below. Each entry of tests/skips.toml names a
test (a node id; it also covers that test's parameter variants) and the reason it
may skip in CI; entries without a reason are refused.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

ALLOW_LIST = Path("tests") / "skips.toml"
# (node id, reason) of every skip in this session; a TestReport carries no config to stash on.
_SKIPS: list[tuple[str, str]] = []


def in_ci() -> bool:
    """True when the CI variable says so (`true` or `1`, any case), as CI systems set it."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def load_allowed(path: Path) -> dict[str, str]:
    """Test id -> reason, from the allow-list file (empty when it does not exist)."""
    if not path.exists():
        return {}
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("allow", [])
    allowed = {}
    for entry in entries:
        test, reason = entry.get("test", ""), entry.get("reason", "").strip()
        if not test or not reason:
            msg = f"{path}: every [[allow]] entry needs a test and a reason: {entry}"
            raise pytest.UsageError(msg)
        allowed[test] = reason
    return allowed


def _allowed(nodeid: str, allowed: dict[str, str]) -> bool:
    return any(nodeid == test or nodeid.startswith(f"{test}[") for test in allowed)


def pytest_configure(config: pytest.Config) -> None:
    """Start the session with no recorded skips."""
    del config
    _SKIPS.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record every skip (an xfail is not a skip: strict xfail covers it)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        _SKIPS.append((report.nodeid, reason))


def unlisted(config: pytest.Config) -> list[tuple[str, str]]:
    """The skips of this session that the allow-list does not cover."""
    allowed = load_allowed(config.rootpath / ALLOW_LIST)
    return [(n, r) for n, r in _SKIPS if not _allowed(n, allowed)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, turn a passing session with unlisted skips into a failure."""
    if in_ci() and unlisted(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name each unlisted skip, and say what CI does with it."""
    found = unlisted(terminalreporter.config)
    if not found:
        return
    verdict = "fail the session (CI=true)" if in_ci() else "would fail it under CI=true"
    terminalreporter.section(f"skips not in {ALLOW_LIST}: they {verdict}", red=in_ci())
    for nodeid, reason in found:
        terminalreporter.line(f"{nodeid}: {reason}")
