"""Tests for dsjob.errors: the exit-code map every caller (Step Functions, the CLI) relies on."""

from __future__ import annotations

import pytest

from dsjob import errors
from dsjob.errors import (
    ConfigError,
    DsjobError,
    ExitCode,
    InputError,
    InterruptedRunError,
    MalformedInputError,
    MissingObjectError,
    OutOfMemoryError,
    ScriptTimeoutError,
    TerminatedError,
    TransientError,
    UnsafeArchiveError,
    UserCodeError,
)

pytestmark = pytest.mark.unit

DOCUMENTED = {
    "OK": 0,
    "INTERNAL": 1,
    "CONFIG": 2,
    "INPUT": 3,
    "USER_CODE": 4,
    "TRANSIENT": 5,
    "OUT_OF_MEMORY": 6,
    "INTERRUPTED": 130,
    "TERMINATED": 143,
}


def test_exit_codes_are_the_documented_numbers() -> None:
    """The ExitCode enum holds exactly the documented name -> number map."""
    assert {c.name: int(c) for c in ExitCode} == DOCUMENTED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DsjobError("x"), 1),
        (ConfigError("x"), 2),
        (InputError("x"), 3),
        (MissingObjectError("s3://b/k"), 3),
        (MalformedInputError("x"), 3),
        (UnsafeArchiveError("m", "why"), 3),
        (UserCodeError("x"), 4),
        (ScriptTimeoutError("x"), 4),
        (TransientError("x"), 5),
        (OutOfMemoryError("x"), 6),
        (InterruptedRunError("x"), 130),
        (TerminatedError("x"), 143),
    ],
)
def test_each_error_carries_its_exit_code(error: DsjobError, code: int) -> None:
    """Every class in the tree exits with its own code."""
    assert error.exit_code == code


def test_only_transient_errors_are_retryable() -> None:
    """Step Functions retries exit 5 alone: exactly TransientError and its subclasses retry."""
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, DsjobError)
    ]
    assert len(classes) >= 12
    assert {c.__name__: c.retryable for c in classes} == {
        c.__name__: issubclass(c, TransientError) for c in classes
    }
    assert {int(c.exit_code) for c in classes if c.retryable} == {5}


def test_messages_name_what_went_wrong() -> None:
    """A missing object names its location; an unsafe member names the member and the reason."""
    missing = MissingObjectError("s3://bucket/raw/x.csv")
    assert str(missing) == "input not found: s3://bucket/raw/x.csv"
    assert missing.location == "s3://bucket/raw/x.csv"
    unsafe = UnsafeArchiveError("../evil.py", "escapes")
    assert str(unsafe) == "unsafe member in package archive: '../evil.py': escapes"
    assert unsafe.member == "../evil.py"


def test_the_docstring_tree_lists_every_class_with_its_code() -> None:
    """The module docstring's tree names each class and the code it exits with."""
    doc = errors.__doc__ or ""
    for cls in (ConfigError, InputError, UserCodeError, TransientError, OutOfMemoryError):
        line = next(ln for ln in doc.splitlines() if f" {cls.__name__} " in f" {ln} ")
        assert f"exit {int(cls.exit_code)}" in line
    for signalled in (InterruptedRunError, TerminatedError):
        line = next(ln for ln in doc.splitlines() if signalled.__name__ in ln)
        assert f"exit {int(signalled.exit_code)}" in line
