"""The exception tree and the exit codes it maps to.

Library code raises these; only the CLI edge turns one into an ``Error: ...``
line and ``sys.exit(error.exit_code)``::

    DsjobError                      exit 1  unexpected / internal
    ├── ConfigError                 exit 2  usage or configuration is wrong (final)
    ├── InputError                  exit 3  an input is missing or invalid (final)
    │   ├── MissingObjectError              names the bucket and key (or path)
    │   ├── MalformedInputError             names the line where possible
    │   └── UnsafeArchiveError              names the offending tar member
    ├── UserCodeError               exit 4  script.py failed or timed out (final)
    │   └── ScriptTimeoutError
    ├── TransientError              exit 5  throttled, connection dropped: retry
    │   └── ConflictError                   a conditional write lost a race for a key
    ├── OutOfMemoryError            exit 6  the step ran out of memory: raise it, do not retry as is
    ├── InterruptedRunError         exit 130  Ctrl-C (SIGINT)
    └── TerminatedError             exit 143  SIGTERM (ECS stop): nothing published

Only ``TransientError`` is worth retrying; Step Functions retries on exit 5
alone. ``TerminatedError`` uses the shell's 128+SIGTERM convention.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README "Exit codes")."""

    OK = 0
    INTERNAL = 1
    CONFIG = 2
    INPUT = 3
    USER_CODE = 4
    TRANSIENT = 5
    OUT_OF_MEMORY = 6
    INTERRUPTED = 130
    TERMINATED = 143


class DsjobError(Exception):
    """Base of every error dsjob raises on purpose; unexpected failures exit 1."""

    exit_code: ExitCode = ExitCode.INTERNAL
    retryable: bool = False


class ConfigError(DsjobError):
    """Usage or configuration is wrong: missing or invalid parameters, bad flags."""

    exit_code = ExitCode.CONFIG


class InputError(DsjobError):
    """An input is missing or cannot be processed as it is."""

    exit_code = ExitCode.INPUT


class MissingObjectError(InputError):
    """An S3 object (or local file) the job needs does not exist."""

    def __init__(self, location: str) -> None:
        """Args: location: ``s3://bucket/key`` or a local path, named in the message."""
        super().__init__(f"input not found: {location}")
        self.location = location


class MalformedInputError(InputError):
    """The input data is malformed (ragged rows, bad encoding, empty, header only)."""


class UnsafeArchiveError(InputError):
    """package.tar.gz holds a member that would escape or abuse the work dir."""

    def __init__(self, member: str, reason: str) -> None:
        """Args: member: the tar member's name; reason: why it is refused."""
        super().__init__(f"unsafe member in package archive: {member!r}: {reason}")
        self.member = member


class UserCodeError(DsjobError):
    """The custom script exited non-zero (or produced nothing usable)."""

    exit_code = ExitCode.USER_CODE


class ScriptTimeoutError(UserCodeError):
    """The custom script ran longer than its timeout and was stopped."""


class TransientError(DsjobError):
    """A failure that may go away on retry: throttling, dropped connections, 5xx."""

    exit_code = ExitCode.TRANSIENT
    retryable = True


class ConflictError(TransientError):
    """A conditional write found its key taken or its ETag moved (HTTP 412): pick again."""


class OutOfMemoryError(DsjobError):
    """The step needed more memory than it was given; the same retry would fail again."""

    exit_code = ExitCode.OUT_OF_MEMORY


class InterruptedRunError(DsjobError):
    """The user pressed Ctrl-C (SIGINT)."""

    exit_code = ExitCode.INTERRUPTED


class TerminatedError(DsjobError):
    """The job was asked to stop (SIGTERM from ECS) before it finished."""

    exit_code = ExitCode.TERMINATED


def error_name(code: ExitCode) -> str:
    """The workflow's error for an exit code, ``Dsjob.<CamelCase>``: USER_CODE -> Dsjob.UserCode.

    Step Functions fails a Fargate run with this name (infra/dsjob_infra/job_block.py),
    and the Lambda handler raises an exception of this name, so both paths share it.
    """
    return "Dsjob." + "".join(part.capitalize() for part in code.name.split("_"))
