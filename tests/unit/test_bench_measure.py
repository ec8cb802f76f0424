"""Tests for the benchmark harness's measure(): deadlines and what it reports."""

from __future__ import annotations

import sys

import pytest

from bench.harness.measure import measure

pytestmark = pytest.mark.unit


def test_a_silent_child_is_killed_at_the_deadline() -> None:
    """A child that prints nothing and never exits is killed when the deadline passes."""
    sample = measure([sys.executable, "-c", "import time; time.sleep(120)"], timeout=1)
    assert sample.timed_out
    assert sample.returncode == -9
    assert sample.wall < 30


def test_a_grandchild_holding_stdout_does_not_outlive_the_deadline() -> None:
    """At the deadline the whole process group goes, grandchildren holding the pipe included."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print('started', flush=True); time.sleep(120)"
    )
    sample = measure([sys.executable, "-c", code], timeout=2, first_line=True)
    assert sample.timed_out
    assert sample.stdout == "started\n"
    assert sample.first_line_at is not None
    assert sample.wall < 30


def test_a_finished_child_reports_its_exit_code_and_output() -> None:
    """A child that exits in time is not marked timed out and keeps its exit code and stdout."""
    sample = measure([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], timeout=60)
    assert not sample.timed_out
    assert (sample.returncode, sample.stdout) == (3, "hi\n")
    assert sample.cpu > 0
    assert sample.rss > 0
