"""What a custom script knows of its run (paths, via DSJOB_*) and how it reports back.

`context().report(rows_in=..., dropped={...}, metrics={...})` writes a small
JSON file the job reads after the script exits; its counts and metrics land in
the run manifest, the summary and the status line (Dagster Pipes' idea of a
materialization report from inside the user's process, kept to one file).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsjob.errors import ConfigError, UserCodeError

if TYPE_CHECKING:
    from collections.abc import Mapping

LOGGER = logging.getLogger(__name__)

ENV_INPUT_PATH = "DSJOB_INPUT_PATH"
ENV_MODEL_PATH = "DSJOB_MODEL_PATH"
ENV_OUTPUT_DIR = "DSJOB_OUTPUT_DIR"
ENV_RUN_ID = "DSJOB_RUN_ID"
ENV_WORK_DIR = "DSJOB_WORK_DIR"
ENV_REPORT_PATH = "DSJOB_REPORT_PATH"

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
        report_path: where `report()` writes (None: reports are not collected).
    """

    input_path: Path
    model_path: Path | None
    output_dir: Path
    run_id: str
    work_dir: Path
    report_path: Path | None = None

    def report(
        self,
        *,
        rows_in: int | None = None,
        rows_out: int | None = None,
        dropped: Mapping[str, int] | None = None,
        metrics: Mapping[str, float | int | str | bool] | None = None,
    ) -> None:
        """Record counts and metrics for the manifest; later calls add to earlier ones.

        Args:
            rows_in: rows the script read (default: counted from the input file).
            rows_out: rows it wrote (default: counted from the output files).
            dropped: rows dropped, by reason (`{"null_id": 12}`); reasons accumulate.
            metrics: named scalar values (`{"auc": 0.91}`); a name reported again is replaced.

        Raises:
            UserCodeError: a count is not a non-negative integer, or a metric not a scalar.
        """
        report = read_report(self.report_path) if self.report_path else {}
        for name, count in (("rows_in", rows_in), ("rows_out", rows_out)):
            if count is not None:
                report[name] = _count(name, count)
        merged = dict(report.get("dropped", {}))
        for reason, n in (dropped or {}).items():
            merged[str(reason)] = merged.get(str(reason), 0) + _count(f"dropped[{reason!r}]", n)
        if merged:
            report["dropped"] = merged
        for name, value in (metrics or {}).items():
            if not isinstance(value, int | float | str | bool):
                raise UserCodeError(
                    f"report(metrics=...): {name!r} must be a number, string or bool, "
                    f"got {type(value).__name__}"
                )
            report.setdefault("metrics", {})[str(name)] = value
        if self.report_path is None:
            LOGGER.info("report (not collected outside a job)", extra={"report": report})
            return
        tmp = self.report_path.with_name(self.report_path.name + ".tmp")
        tmp.write_text(json.dumps(report), encoding="utf-8")
        tmp.replace(self.report_path)  # the job never reads half a report


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserCodeError(f"report(): {name} must be a non-negative integer, got {value!r}")
    return value


def read_report(path: Path) -> dict[str, Any]:
    """What the script reported (empty when it reported nothing).

    Raises:
        UserCodeError: the report file is not a JSON object (written by hand, or broken).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise UserCodeError(f"the script's report {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserCodeError(f"the script's report {path} is not a JSON object")
    return data


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
    report = env.get(ENV_REPORT_PATH)
    return JobContext(
        input_path=Path(env[ENV_INPUT_PATH]),
        model_path=Path(model) if model else None,
        output_dir=Path(env[ENV_OUTPUT_DIR]),
        run_id=env[ENV_RUN_ID],
        work_dir=Path(env[ENV_WORK_DIR]),
        report_path=Path(report) if report else None,
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
    if ctx.report_path is not None:
        env[ENV_REPORT_PATH] = str(ctx.report_path)
    return env
