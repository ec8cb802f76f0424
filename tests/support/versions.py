"""config/versions.conf (and files like it) read from Python, as the shell would source them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.support.paths import REPO

if TYPE_CHECKING:
    from pathlib import Path


def read_conf(path: Path) -> dict[str, str]:
    """KEY=value lines of a shell-sourceable file (comments and blanks skipped; none if absent)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


VERSIONS = read_conf(REPO / "config" / "versions.conf")
