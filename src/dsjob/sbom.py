"""Does the venv still hold what the image's CycloneDX SBOM says it was built with?"""

from __future__ import annotations

import json
import os
import re
from importlib import metadata
from pathlib import Path

# Set in every image (docker/Dockerfile); absent outside one, where there is no SBOM.
SBOM_ENV = "DSJOB_SBOM_FILE"
# The project is installed after the SBOM is written (the image describes it as the
# SBOM's subject); pip and friends are tools a developer may add to a dev venv.
_NOT_LISTED = {"dsjob", "pip", "setuptools", "wheel"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_components(path: Path) -> dict[str, str]:
    """The SBOM's pkg:pypi components, name -> version."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return {
        _norm(component["name"]): component["version"]
        for component in document.get("components", [])
        if str(component.get("purl", "")).startswith("pkg:pypi/")
    }


def drift(path: Path) -> list[str]:
    """Differences between the SBOM's Python components and the installed distributions."""
    listed = python_components(path)
    have = {
        _norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]
    }
    problems = [
        f"{name}: SBOM {version}, installed {have.get(name, 'nothing')}"
        for name, version in sorted(listed.items())
        if have.get(name) != version
    ]
    problems.extend(
        f"{name}: installed {version}, not in the SBOM"
        for name, version in sorted(have.items())
        if name not in listed and name not in _NOT_LISTED
    )
    return problems


def check() -> tuple[bool, str]:
    """(ok, detail) for `dsjob health`: the venv against $DSJOB_SBOM_FILE, when set."""
    env = os.environ.get(SBOM_ENV)
    if not env:
        return True, f"no SBOM to compare (set {SBOM_ENV})"
    path = Path(env)
    try:
        problems = drift(path)
    except (OSError, ValueError, KeyError) as exc:
        return False, f"cannot read the SBOM {path}: {exc}"
    if problems:
        return False, "; ".join(problems)
    return True, f"installed distributions match {path}"
