"""A run's work directory: made fresh, removed at any depth after the run unless kept.

A failure to remove it is logged, never the job's result.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["KEEP_WORK_ENV", "remove_tree", "work_dir"]

#: Set to "1" to keep every work directory (single runs and fan-out tasks) for debugging.
KEEP_WORK_ENV = "DSJOB_KEEP_WORK"

LOGGER = logging.getLogger(__name__)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@contextmanager
def work_dir(prefix: str, root: Path | None) -> Iterator[Path]:
    """A new directory under ``root`` (the system temp dir when None) for one run or task.

    On the way out it is removed, however the run ended, unless ``DSJOB_KEEP_WORK=1``:
    then it stays and its path is logged, so a failed run can be looked at.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield path
    finally:
        if os.environ.get(KEEP_WORK_ENV) == "1":
            LOGGER.info("work dir kept", extra={"path": str(path), "env": KEEP_WORK_ENV})
        else:
            remove_tree(path)


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
