"""The CI skip policy, on a throwaway suite run by a real pytest subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.support.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

_SUITE = '''
import pytest

def test_runs():
    """Runs."""

def test_needs_a_gpu():
    """Skips."""
    pytest.skip("no gpu here")

@pytest.mark.xfail(strict=True)
def test_known_bug():
    """An xfail is not a skip."""
    raise AssertionError
'''


def _suite(tmp_path: Path, allow: str | None) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "from tests.support.skips import (  # noqa: F401\n"
        "    pytest_configure, pytest_runtest_logreport,\n"
        "    pytest_sessionfinish, pytest_terminal_summary,\n"
        ")\n"
    )
    (tmp_path / "test_it.py").write_text(_SUITE)
    if allow is not None:
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "skips.toml").write_text(allow)
    return tmp_path


def _pytest(suite: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(REPO)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_it.py"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unlisted_skip_fails_the_session_in_ci(tmp_path: Path) -> None:
    """With CI=true, a passing session with an unlisted skip exits 1 and names the test."""
    done = _pytest(_suite(tmp_path, None), "true")
    assert done.returncode == 1, done.stdout
    assert "test_it.py::test_needs_a_gpu: no gpu here" in done.stdout
    assert "fail the session (CI=true)" in done.stdout


def test_outside_ci_a_skip_is_reported_but_passes(tmp_path: Path) -> None:
    """Without CI the session passes, and the summary still says what CI would do."""
    done = _pytest(_suite(tmp_path, None), None)
    assert done.returncode == 0, done.stdout
    assert "would fail it under CI=true" in done.stdout


def test_listed_skip_with_a_reason_passes_in_ci(tmp_path: Path) -> None:
    """A skip named in tests/skips.toml with a reason keeps a CI session green."""
    allow = '[[allow]]\ntest = "test_it.py::test_needs_a_gpu"\nreason = "CI has no GPU"\n'
    done = _pytest(_suite(tmp_path, allow), "true")
    assert done.returncode == 0, done.stdout
    assert "skips not in" not in done.stdout


def test_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    """An allow-list entry without a reason is a usage error, not a silent pass."""
    allow = '[[allow]]\ntest = "test_it.py::test_needs_a_gpu"\n'
    done = _pytest(_suite(tmp_path, allow), "true")
    assert done.returncode != 0
    assert "needs a test and a reason" in done.stdout + done.stderr


def test_the_repository_allow_list_has_a_reason_for_every_entry() -> None:
    """tests/skips.toml parses, and every entry names an existing test file and a reason."""
    from tests.support.skips import ALLOW_LIST, load_allowed  # noqa: PLC0415

    allowed = load_allowed(REPO / ALLOW_LIST)
    assert allowed
    for test in allowed:
        assert (REPO / test.split("::")[0]).is_file(), test
