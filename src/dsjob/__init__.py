"""dsjob: fetch from S3, run a script or the built-in DuckDB step, publish without losing data.

The public API a custom script uses is `dsjob.context()`; the rest is the CLI.
Importing this package stays cheap: nothing here loads boto3, DuckDB or pandas.
"""

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
]
