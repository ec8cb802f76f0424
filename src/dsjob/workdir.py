"""Remove a work directory of any depth; a failure is logged, never the job's result."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["remove_tree"]

LOGGER = logging.getLogger(__name__)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def remove_tree(root: Path) -> bool:
    """Remove ``root`` and everything below it, at any depth; log a failure, never raise.

    Iterative and relative to directory descriptors: ``shutil.rmtree`` recurses
    (a RecursionError on ~1,000 nested directories in Python 3.11) and long paths
    exceed PATH_MAX, while this holds one descriptor and one name per level.

    Returns:
        True when ``root`` is gone.
    """
    try:
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            root.unlink()
        elif root.exists():
            _remove_dir(root)
    except OSError as exc:
        LOGGER.warning("could not remove directory", extra={"path": str(root), "error": str(exc)})
        return False
    return True


def _scan(fd: int) -> list[str]:
    """Unlink every non-directory in the directory ``fd``; return its subdirectory names."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


def _remove_dir(root: Path) -> None:
    fd = os.open(root, _DIR_FLAGS)
    pending = [_scan(fd)]  # per level: subdirectories still to remove
    names: list[str] = []  # the path from root to where fd points
    try:
        while pending:
            if pending[-1]:
                name = pending[-1].pop()
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                names.append(name)
                pending.append(_scan(fd))
                continue
            pending.pop()
            if names:
                parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = parent
                os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    root.rmdir()
