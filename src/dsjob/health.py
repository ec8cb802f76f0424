"""`dsjob health` and `dsjob versions`: is this environment the one the lock describes?"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dsjob import sbom
from dsjob.errors import ConfigError

LOGGER = logging.getLogger(__name__)

# Imported for real: a wheel that installed but cannot load its native library fails here.
KEY_MODULES = ("boto3", "duckdb", "pandas")
DATA_STACK = (
    "dsjob",
    "duckdb",
    "pandas",
    "numpy",
    "boto3",
    "botocore",
    "pyarrow",
    "scikit-learn",
    "polars",
)
_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\#]+?))?\s*\\?\s*$"
)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Check:
    """One health-check line."""

    name: str
    ok: bool
    detail: str


def read_lock(path: Path) -> dict[str, str]:
    """Pinned versions that apply to this interpreter, by normalised name."""
    from packaging.markers import Marker  # noqa: PLC0415

    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[_norm(name)] = version
    if not pins:
        raise ConfigError(f"{path} holds no pinned packages")
    return pins


def installed() -> dict[str, str]:
    """Installed distributions, by normalised name."""
    return {
        _norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]
    }


def lock_path(explicit: Path | None) -> Path | None:
    """The lock to compare against: --lock, else $DSJOB_LOCK_FILE, else none."""
    if explicit is not None:
        return explicit
    env = os.environ.get("DSJOB_LOCK_FILE")
    return Path(env) if env else None


def drift(lock: Path) -> list[str]:
    """Differences between the lock and what is installed (the project itself excepted)."""
    pins, have = read_lock(lock), installed()
    problems = [
        f"{name}: locked {want}, installed {have.get(name, 'nothing')}"
        for name, want in sorted(pins.items())
        if have.get(name) != want
    ]
    # Tools a venv may carry that no lock pins.
    ignored = {"dsjob", "pip", "setuptools", "wheel"}
    problems.extend(
        f"{name}: installed {version}, not in the lock"
        for name, version in sorted(have.items())
        if name not in pins and name not in ignored
    )
    return problems


def checks(lock: Path | None, *, aws: bool, prefix: str | None) -> list[Check]:
    """Run every check; none raises."""
    results: list[Check] = []
    for module in KEY_MODULES:
        try:
            importlib.import_module(module)
            results.append(Check(f"import {module}", ok=True, detail="ok"))
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            results.append(
                Check(f"import {module}", ok=False, detail=f"{type(exc).__name__}: {exc}")
            )
    if lock is None:
        results.append(Check("lock", ok=True, detail="no lock to compare (set DSJOB_LOCK_FILE)"))
    elif not lock.is_file():
        results.append(Check("lock", ok=False, detail=f"{lock} does not exist"))
    else:
        problems = drift(lock)
        detail = "; ".join(problems) if problems else f"installed versions match {lock}"
        results.append(Check("lock", ok=not problems, detail=detail))
    results.append(Check("sbom", *sbom.check()))
    try:
        with tempfile.NamedTemporaryFile(prefix="dsjob-health-") as handle:
            handle.write(b"ok")
        results.append(Check("tmp dir", ok=True, detail=f"{tempfile.gettempdir()} writable"))
    except OSError as exc:
        results.append(Check("tmp dir", ok=False, detail=str(exc)))
    if aws:
        results.extend(_aws_checks(prefix))
    return results


def _aws_checks(prefix: str | None) -> list[Check]:
    from dsjob.aws import Clients, aws_errors, translate  # noqa: PLC0415
    from dsjob.config import DEFAULT_PREFIX  # noqa: PLC0415

    clients = Clients()
    found: list[Check] = []
    try:
        who = clients.sts.get_caller_identity()
        found.append(Check("aws sts", ok=True, detail=f"account {who.get('Account')}"))
    except aws_errors() as exc:
        found.append(Check("aws sts", ok=False, detail=str(translate(exc, "STS"))))
    path = prefix or os.environ.get("DSJOB_PARAM_PREFIX") or DEFAULT_PREFIX
    try:
        page = clients.ssm.get_parameters_by_path(Path=path, MaxResults=10)
        count = len(page.get("Parameters", []))
        found.append(Check("aws ssm", ok=True, detail=f"{count} parameter(s) under {path}"))
    except aws_errors() as exc:
        found.append(Check("aws ssm", ok=False, detail=str(translate(exc, "SSM"))))
    return found


def versions(lock: Path | None) -> list[tuple[str, str, str]]:
    """(package, installed, locked) for the data stack; "-" where absent."""
    path = lock_path(lock)
    pins = read_lock(path) if path and path.is_file() else {}
    have = installed()
    rows = [
        (name, have.get(name, "-"), pins.get(name, "-"))
        for name in DATA_STACK
        if name in have or name in pins
    ]
    rows.append(("python", sys.version.split()[0], "-"))
    return rows
