"""Tests for dsjob.workdir: removing trees of any depth, failures logged not raised."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from dsjob.workdir import remove_tree

pytestmark = pytest.mark.unit


def _deep(root: Path, levels: int) -> None:
    """Nest `levels` directories under root, with a file and a symlink at the bottom."""
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("f.txt", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        os.symlink("/etc", "etc-link", dir_fd=fd)
    finally:
        os.close(fd)


def test_removes_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    """3,000 nested directories (beyond recursion and PATH_MAX) are removed entirely."""
    work = tmp_path / "work"
    _deep(work, 3000)
    assert remove_tree(work) is True
    assert not work.exists()
    assert Path("/etc").is_dir(), "a symlink in the tree is removed, never followed"


def test_removes_wide_trees_files_and_links(tmp_path: Path) -> None:
    """Sibling directories, files and dangling links all go, and the root with them."""
    work = tmp_path / "work"
    for i in range(50):
        (work / f"dir{i}" / "sub").mkdir(parents=True)
        (work / f"dir{i}" / "sub" / "x").write_text("x")
    (work / "dangling").symlink_to(tmp_path / "nowhere")
    assert remove_tree(work) is True
    assert list(tmp_path.iterdir()) == []


def test_missing_tree_is_fine(tmp_path: Path) -> None:
    """Removing a path that does not exist succeeds quietly."""
    assert remove_tree(tmp_path / "never-made") is True


def test_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A tree the kernel refuses to change (procfs, even for root) returns False and logs it."""
    victim = Path("/proc/self/fdinfo")
    with caplog.at_level(logging.WARNING, logger="dsjob.workdir"):
        assert remove_tree(victim) is False
    assert "could not remove directory" in caplog.text
    assert victim.is_dir()
