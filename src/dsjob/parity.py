"""Prod parity on a laptop: a script's imports that the prod image's lock does not provide.

The dev venv holds far more than the prod image (polars, moto, jupyter ...), so a
script importing one of them passes `dsjob run` locally and fails in ECS. This
reads the script's top-level imports and names those whose distribution is
installed here but not pinned in `requirements.lock`.
"""

from __future__ import annotations

import ast
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

LOGGER = logging.getLogger(__name__)

PROD_LOCK_ENV = "DSJOB_PROD_LOCK"


def top_level_imports(source: str) -> set[str]:
    """The absolute top-level module names a Python source imports, anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def prod_lock() -> Path | None:
    """$DSJOB_PROD_LOCK, else the checkout's requirements.lock (a dev install); else None."""
    explicit = os.environ.get(PROD_LOCK_ENV)
    if explicit:
        return Path(explicit)
    # src/dsjob/parity.py -> the repository root in an editable (dev) install.
    candidate = Path(__file__).resolve().parents[2] / "requirements.lock"
    return candidate if candidate.is_file() else None


def unlocked_imports(script: Path, lock: Path) -> dict[str, list[str]]:
    """Modules `script` imports that come from a distribution the lock does not pin.

    Returns:
        module name -> the installed distributions that provide it.
    """
    from dsjob.health import read_lock  # noqa: PLC0415

    pinned = {_norm(n) for n in read_lock(lock)} | {"dsjob"}
    local = {p.stem for p in script.parent.iterdir()} | {"package"}
    providers = metadata.packages_distributions()
    missing: dict[str, list[str]] = {}
    for module in sorted(top_level_imports(script.read_text(encoding="utf-8"))):
        if module in sys.stdlib_module_names or module in local:
            continue
        dists = sorted({_norm(d) for d in providers.get(module, [])})
        if dists and not any(d in pinned for d in dists):
            missing[module] = dists
    return missing


def warn_unlocked_imports(script: Path, lock: Path | None = None) -> dict[str, list[str]]:
    """Log one warning per import the prod image lacks; quiet when no prod lock is known."""
    lock = lock or prod_lock()
    if lock is None or not lock.is_file():
        return {}
    try:
        missing = unlocked_imports(script, lock)
    except (SyntaxError, UnicodeDecodeError, OSError):
        return {}  # the run itself reports a broken script, with its traceback
    for module, dists in missing.items():
        LOGGER.warning(
            "%s imports %r (%s), which %s does not provide: "
            "it works in this venv but fails in the prod image",
            script.name,
            module,
            ", ".join(dists),
            lock.name,
            extra={"import": module, "lock": str(lock)},
        )
    return missing


def _norm(name: str) -> str:
    return name.replace("_", "-").replace(".", "-").lower()
