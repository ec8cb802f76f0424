"""dsjob: fetch from S3, run a script or the built-in DuckDB step, publish without losing data.

A custom script uses `dsjob.context()`. Notebooks use `dsjob.run(...)` (one run,
in process, returning its summary) and `dsjob.emulator.connect()` (the embedded
AWS with ready clients). Importing this package stays cheap: nothing here loads
boto3, DuckDB or pandas until one of those is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsjob.context import JobContext, context
from dsjob.errors import (
    ConfigError,
    DsjobError,
    ExitCode,
    InputError,
    MalformedInputError,
    MissingObjectError,
    ScriptTimeoutError,
    TerminatedError,
    TransientError,
    UnsafeArchiveError,
    UserCodeError,
)

if TYPE_CHECKING:
    from dsjob.job import RunSummary


def version() -> str:
    """The installed version of dsjob.

    pyproject.toml's ``[project] version`` is the one place it is written; the
    package metadata carries it here, and the build tooling reads the same field
    (``project_version`` in scripts/lib/common.sh) for image tags, labels and the SBOM.
    """
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("dsjob")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def run(**params: object) -> RunSummary:
    """Run the job once in this process, like `dsjob run`, and return its summary.

    Parameters are `dsjob run`'s flags with `_` for `-`
    (``dsjob.run(input="data.csv", output_dir="out")``); the rest come from
    DSJOB_* and SSM as usual. Raises the run's `DsjobError` on failure.
    """
    from dsjob.runner import run_in_process  # noqa: PLC0415

    return run_in_process(params)


__all__ = [
    "ConfigError",
    "DsjobError",
    "ExitCode",
    "InputError",
    "JobContext",
    "MalformedInputError",
    "MissingObjectError",
    "ScriptTimeoutError",
    "TerminatedError",
    "TransientError",
    "UnsafeArchiveError",
    "UserCodeError",
    "context",
    "run",
    "version",
]
