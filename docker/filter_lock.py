# ruff: noqa: INP001
"""Drop dependency groups from a uv-compiled lock, keeping exact pins and hashes.

    python3 filter_lock.py LOCK GROUP [GROUP ...] > FILTERED

uv annotates every pin with the packages (or `dsjob (pyproject.toml:GROUP)` roots) that
need it. A package stays when at least one of those is kept: the project's own
dependencies and extras, a group not being dropped, or a package that stays. So the
filtered lock is exactly the subset of LOCK that the remaining groups pull in, with the
same versions and hashes (the dev image uses it to leave out the CDK toolchain, which
needs Node.js and is 0.5 GB). Standard library only: runs with any python3.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==")
_ROOT = re.compile(r"^dsjob \(pyproject\.toml(?::([A-Za-z0-9_-]+))?\)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(text: str) -> list[tuple[str, list[str], list[str]]]:
    """Split a lock into (normalised name, lines, via entries) blocks, in order."""
    blocks: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            blocks.append((_norm(match.group(1)), [line], []))
            continue
        if not blocks:
            continue
        _, lines, via = blocks[-1]
        lines.append(line)
        comment = line.strip().removeprefix("#").strip()
        if line.lstrip().startswith("#") and comment and comment != "via":
            via.append(comment.removeprefix("via ").strip())
    return blocks


def keep(blocks: list[tuple[str, list[str], list[str]]], dropped: set[str]) -> set[str]:
    """Names reachable from the project's roots once the dropped groups are gone."""
    kept: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, _, via in blocks:
            if name in kept:
                continue
            for parent in via:
                root = _ROOT.match(parent)
                if (root and root.group(1) not in dropped) or _norm(parent) in kept:
                    kept.add(name)
                    changed = True
                    break
    return kept


def main(argv: list[str]) -> int:
    """Print LOCK without the packages only the given groups need."""
    if len(argv) < 2:  # noqa: PLR2004 - the lock and at least one group
        sys.stderr.write(__doc__ or "")
        return 2
    blocks = parse(Path(argv[0]).read_text(encoding="utf-8"))
    kept = keep(blocks, set(argv[1:]))
    out = [line for name, lines, _ in blocks if name in kept for line in lines]
    sys.stdout.write("\n".join(out) + "\n")
    dropped = sorted({name for name, _, _ in blocks} - kept)
    sys.stderr.write(f"dropped {len(dropped)} packages: {' '.join(dropped)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
