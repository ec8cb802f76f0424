"""dsjob.lambda_handler: events as per-run flags, and Lambda's limits checked up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsjob import lambda_handler as lh
from dsjob.errors import (
    ConfigError,
    ConflictError,
    ExitCode,
    InputError,
    TransientError,
    error_name,
)

pytestmark = pytest.mark.unit


def test_event_fields_become_flags_with_either_spelling() -> None:
    """`input_key` and `run-id` both name dsjob parameters; values become strings."""
    flags = lh.flags_from_event({"input_key": "raw/a.csv", "run-id": "r1", "keep-outputs": 2})
    assert flags["input-key"] == "raw/a.csv"
    assert flags["run-id"] == "r1"
    assert flags["keep-outputs"] == "2"
    assert flags["output-bucket"] is None


def test_unknown_event_field_is_a_config_error_naming_it() -> None:
    """A misspelt field exits 2 (config) and names the field."""
    with pytest.raises(ConfigError, match="'inptu'") as caught:
        lh.flags_from_event({"inptu": "s3://b/k"})
    assert caught.value.exit_code == ExitCode.CONFIG
    with pytest.raises(ConfigError, match="JSON object"):
        lh.flags_from_event(["not", "an", "object"])


def test_memory_limit_derives_from_the_function_size(tmp_path: Path) -> None:
    """1024 MB of function memory gives DuckDB 614MB; an explicit memory-limit wins."""
    flags = lh.flags_from_event({"work-root": str(tmp_path)})
    lh.apply_limits(flags, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"})
    assert flags["memory-limit"] == "614MB"
    given = lh.flags_from_event({"work-root": str(tmp_path), "memory-limit": "200MB"})
    lh.apply_limits(given, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"})
    assert given["memory-limit"] == "200MB"
    with pytest.raises(ConfigError, match="AWS_LAMBDA_FUNCTION_MEMORY_SIZE"):
        lh.apply_limits(lh.flags_from_event({}), {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "lots"})


def test_unwritable_work_root_is_refused(tmp_path: Path) -> None:
    """A work root that cannot be written (Lambda's read-only root) is a config error."""
    flags = lh.flags_from_event({"work-root": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="only /tmp"):
        lh.apply_limits(flags, {})


def test_input_predicted_past_the_time_limit_is_refused_with_the_fargate_hint() -> None:
    """An input that would outrun the invocation's remaining time is refused up front."""
    big = lh.BYTES_PER_SECOND * 16 * 60
    with pytest.raises(InputError, match="Fargate") as caught:
        lh.check_input(big, tmp_free=10 * big, remaining_s=900)
    assert caught.value.exit_code == ExitCode.INPUT
    lh.check_input(lh.BYTES_PER_SECOND * 60, tmp_free=10**12, remaining_s=900)
    with pytest.raises(InputError, match="min"):
        lh.check_input(lh.BYTES_PER_SECOND * 60, tmp_free=10**12, remaining_s=30)


def test_input_larger_than_tmp_allows_is_refused() -> None:
    """An input needing more than /tmp's free space names both sizes."""
    with pytest.raises(InputError, match="/tmp has 100 MB free"):
        lh.check_input(50 * 10**6, tmp_free=100 * 10**6, remaining_s=900)


def test_a_failed_run_raises_its_workflow_error_with_the_status_line(tmp_path: Path) -> None:
    """A missing local input raises Dsjob.Input; the message is the run's JSON status line."""
    event = {"input": str(tmp_path / "missing.csv"), "output-dir": str(tmp_path / "out")}
    event["run-id"] = "lambda-unit"
    with pytest.raises(lh.WorkflowError) as caught:
        lh.handler(event, None)
    assert type(caught.value).__name__ == "Dsjob.Input"
    status = json.loads(str(caught.value))
    assert status["exit_code"] == ExitCode.INPUT
    assert status["run_id"] == "lambda-unit"
    assert "missing.csv" in status["error"]
    assert isinstance(caught.value.__cause__, InputError)


def test_a_refused_event_is_dsjob_config() -> None:
    """An unknown event field fails as Dsjob.Config before any work, naming the field."""
    with pytest.raises(lh.WorkflowError, match="inptu") as caught:
        lh.handler({"inptu": "x"}, None)
    assert type(caught.value).__name__ == "Dsjob.Config"


@pytest.mark.parametrize(
    ("exc", "name", "code"),
    [
        (TransientError("throttled"), "Dsjob.Transient", ExitCode.TRANSIENT),
        (ConflictError("key taken"), "Dsjob.Transient", ExitCode.TRANSIENT),
        (KeyError("surprise"), "Dsjob.Internal", ExitCode.INTERNAL),
    ],
)
def test_workflow_error_is_named_by_exit_code_not_class(
    exc: Exception, name: str, code: ExitCode
) -> None:
    """A subclass of TransientError is still Dsjob.Transient; a stray exception is internal."""
    error = lh.workflow_error(exc, "r1")
    assert type(error).__name__ == name
    assert error.exit_code == code
    assert json.loads(str(error))["exit_code"] == code


def test_every_exit_code_has_its_named_error_class() -> None:
    """Each non-OK exit code maps to a class whose name is the workflow's error name."""
    assert {code: cls.__name__ for code, cls in lh.WORKFLOW_ERRORS.items()} == {
        code: error_name(code) for code in ExitCode if code is not ExitCode.OK
    }
