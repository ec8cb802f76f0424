"""The paths a custom script works with, passed from the runner through the environment."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsjob.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

LOGGER = logging.getLogger(__name__)

ENV_INPUT_PATH = "DSJOB_INPUT_PATH"
ENV_MODEL_PATH = "DSJOB_MODEL_PATH"
ENV_OUTPUT_DIR = "DSJOB_OUTPUT_DIR"
ENV_RUN_ID = "DSJOB_RUN_ID"
ENV_WORK_DIR = "DSJOB_WORK_DIR"

# DSJOB_MODEL_PATH is optional: a job without a model-key has no model file.
_REQUIRED = (ENV_INPUT_PATH, ENV_OUTPUT_DIR, ENV_RUN_ID, ENV_WORK_DIR)


@dataclass(frozen=True)
class JobContext:
    """What a script needs to know about the run it is part of.

    Attributes:
        input_path: the downloaded input file (CSV or Parquet).
        model_path: the downloaded model file, or None when no model is configured.
        output_dir: where the script writes its results; every file here is published.
        run_id: the run's identifier (also names the run manifest).
        work_dir: the script's cwd; holds script.py and the extracted package.
    """

    input_path: Path
    model_path: Path | None
    output_dir: Path
    run_id: str
    work_dir: Path


def context(environ: Mapping[str, str] | None = None) -> JobContext:
    """Return the current job's context, read from the DSJOB_* environment variables.

    Args:
        environ: the environment to read; ``os.environ`` when None.

    Raises:
        ConfigError: outside a job, naming every missing variable at once.
    """
    env = os.environ if environ is None else environ
    missing = [name for name in _REQUIRED if not env.get(name)]
    if missing:
        raise ConfigError(
            "not running inside a dsjob job: missing environment variables: "
            + ", ".join(missing)
            + " (set by `dsjob run`; in a notebook, set them yourself)"
        )
    model = env.get(ENV_MODEL_PATH)
    return JobContext(
        input_path=Path(env[ENV_INPUT_PATH]),
        model_path=Path(model) if model else None,
        output_dir=Path(env[ENV_OUTPUT_DIR]),
        run_id=env[ENV_RUN_ID],
        work_dir=Path(env[ENV_WORK_DIR]),
    )


def context_env(ctx: JobContext) -> dict[str, str]:
    """Return the DSJOB_* environment variables that make ``context()`` return ``ctx``."""
    env = {
        ENV_INPUT_PATH: str(ctx.input_path),
        ENV_OUTPUT_DIR: str(ctx.output_dir),
        ENV_RUN_ID: ctx.run_id,
        ENV_WORK_DIR: str(ctx.work_dir),
    }
    if ctx.model_path is not None:
        env[ENV_MODEL_PATH] = str(ctx.model_path)
    return env
