"""What a script left to publish: the regular files under its output dir, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from dsjob.errors import UserCodeError

# Deeper output trees are refused before anything walks them recursively.
MAX_OUTPUT_DEPTH = 32


def regular_outputs(output_dir: Path, name: str) -> list[Path]:
    """Every file under ``output_dir``, sorted; refuses links, specials and deep trees.

    Outputs are published as regular files: a symlink (``report.txt -> /etc/passwd``)
    would publish or overwrite whatever it points at. The walk is iterative, so a
    deep tree cannot exhaust the stack.

    Args:
        output_dir: the script's output directory.
        name: the script's name, for the message.

    Raises:
        UserCodeError: naming the first offending path relative to ``output_dir``.
    """
    files: list[Path] = []
    pending = [(output_dir, 0)]
    while pending:
        folder, depth = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.path)
                rel = path.relative_to(output_dir).as_posix()
                if entry.is_symlink():
                    raise UserCodeError(
                        f"{name} left a symlink in its output dir: {rel} -> "
                        f"{path.readlink()}; outputs must be regular files"
                    )
                if entry.is_dir(follow_symlinks=False):
                    if depth + 1 >= MAX_OUTPUT_DEPTH:
                        raise UserCodeError(
                            f"{name} nested its output dir deeper than {MAX_OUTPUT_DEPTH} "
                            f"levels at {rel}"
                        )
                    pending.append((path, depth + 1))
                elif entry.is_file(follow_symlinks=False):
                    files.append(path)
                else:
                    raise UserCodeError(
                        f"{name} left {rel} in its output dir, which is not a regular file"
                    )
    return sorted(files)
