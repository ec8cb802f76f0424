"""Tests for dsjob.context: the DSJOB_* environment contract between runner and script."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from dsjob.context import JobContext, context, context_env
from dsjob.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

_ALL = (
    "DSJOB_INPUT_PATH",
    "DSJOB_MODEL_PATH",
    "DSJOB_OUTPUT_DIR",
    "DSJOB_RUN_ID",
    "DSJOB_WORK_DIR",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ALL:
        monkeypatch.delenv(name, raising=False)


def _ctx(tmp_path: Path, *, model: bool) -> JobContext:
    return JobContext(
        input_path=tmp_path / "input.csv",
        model_path=tmp_path / "model.joblib" if model else None,
        output_dir=tmp_path / "out",
        run_id="run-42",
        work_dir=tmp_path,
    )


def test_round_trip_through_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """context() reads back exactly the context the runner exported with context_env()."""
    ctx = _ctx(tmp_path, model=True)
    for key, value in context_env(ctx).items():
        monkeypatch.setenv(key, value)
    assert context() == ctx


def test_model_is_optional(tmp_path: Path) -> None:
    """Without DSJOB_MODEL_PATH the context has model_path None and the env omits it."""
    ctx = _ctx(tmp_path, model=False)
    env = context_env(ctx)
    assert "DSJOB_MODEL_PATH" not in env
    assert context(env) == ctx
    assert context(env).model_path is None


def test_outside_a_job_names_every_missing_variable() -> None:
    """Called outside a job, context() raises ConfigError naming all missing variables at once."""
    with pytest.raises(ConfigError) as excinfo:
        context()
    message = str(excinfo.value)
    for name in ("DSJOB_INPUT_PATH", "DSJOB_OUTPUT_DIR", "DSJOB_RUN_ID", "DSJOB_WORK_DIR"):
        assert name in message
    assert "DSJOB_MODEL_PATH" not in message
    assert excinfo.value.exit_code == 2


def test_partial_environment_names_only_what_is_missing(tmp_path: Path) -> None:
    """An empty variable counts as missing; present ones are not named."""
    env = {"DSJOB_INPUT_PATH": str(tmp_path / "in.csv"), "DSJOB_RUN_ID": "", "DSJOB_WORK_DIR": "w"}
    with pytest.raises(ConfigError, match="DSJOB_OUTPUT_DIR, DSJOB_RUN_ID") as exc:
        context(env)
    assert "DSJOB_INPUT_PATH" not in str(exc.value)
    assert "DSJOB_WORK_DIR" not in str(exc.value)


def test_context_is_frozen(tmp_path: Path) -> None:
    """A JobContext cannot be modified by the script."""
    ctx = _ctx(tmp_path, model=False)
    with pytest.raises(AttributeError):
        ctx.run_id = "other"  # type: ignore[misc]


def test_child_process_sees_context(tmp_path: Path) -> None:
    """A subprocess given context_env() can call dsjob.context.context() and get the same paths."""
    ctx = _ctx(tmp_path, model=True)
    code = "from dsjob.context import context; c = context(); print(c.run_id, c.input_path)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**context_env(ctx), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"run-42 {tmp_path / 'input.csv'}"
