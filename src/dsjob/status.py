"""The run's status: the one-line JSON status on stdout and the status object beside the manifests.

Every entry point (the CLI, the Lambda handler, the fan-out phases) reports a run
with the same `success_status`/`failure_status` body; on S3 outputs `write_status`
also leaves it at `status_key`, where `dsjob runs` and the workflow read it.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from dsjob.errors import DsjobError, ExitCode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dsjob.aws import Clients
    from dsjob.config import JobConfig
    from dsjob.job import RunSummary

LOGGER = logging.getLogger("dsjob")

# The status object is a courtesy for dashboards and `dsjob runs ls`; it must not
# hold up a failing run (an exit 5 usually means S3 is already hard to reach).
_STATUS_ATTEMPTS = 2
_STATUS_TIMEOUT_S = 5


def status_key(prefix: str, run_id: str, task: str = "") -> str:
    """Where the status object of `run_id` (or of one `task` of its fan-out) lives.

    A single run writes ``status/<run-id>.json``; each fan-out task its own
    ``status/<run-id>/<task>.json``, so a failing shard's cause is its own.
    """
    return f"{prefix}status/{run_id}/{task}.json" if task else f"{prefix}status/{run_id}.json"


def task_name(cfg: JobConfig) -> str:
    """A fan-out task's name in its status key: ``map/<input key>``, ``reduce-<k>``, ``commit``.

    The workflow builds the same key from the same facts (the map item's key, the
    partition number), so it reads the failing task's object, not another's.
    """
    from dsjob.config import S3Location  # noqa: PLC0415

    if cfg.phase == "map":
        return f"map/{cfg.input.key if isinstance(cfg.input, S3Location) else cfg.input}"
    if cfg.phase == "reduce":
        return f"reduce-{cfg.partition}"
    return "" if cfg.phase == "single" else cfg.phase


def success_status(summary: RunSummary) -> dict[str, Any]:
    """The one-line JSON status of a finished run (also the status object's body)."""
    status: dict[str, Any] = {
        "status": summary.status,
        "exit_code": 0,
        "run_id": summary.run_id,
        "rows_in": summary.rows_in,
        "rows_out": summary.rows_out,
        "dropped": summary.dropped,
        "outputs": [o.uri for o in summary.outputs],
        "manifest": summary.manifest_uri,
        "duration_s": summary.duration_s,
    }
    if summary.metrics:
        status["metrics"] = summary.metrics
    return status


def failure_status(exc: BaseException, *, run_id: str | None) -> dict[str, Any]:
    """The one-line JSON status of a failed run: its exit code and a one-line reason."""
    code = exc.exit_code if isinstance(exc, DsjobError) else ExitCode.INTERNAL
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, DsjobError):
        message = f"internal error: {type(exc).__name__}: {message}"
    status: dict[str, Any] = {"status": "failed", "exit_code": int(code), "error": message}
    if run_id:
        status["run_id"] = run_id
    return status


def write_status(cfg: JobConfig, clients: Clients | None, status: Mapping[str, Any]) -> str | None:
    """Put the status object (`status` and the run's dataset) next to the manifests; never raise.

    S3 outputs only; a failure to write it is logged.

    Returns:
        The status object's URI, or None when nothing was written.
    """
    from dsjob.config import S3Location  # noqa: PLC0415

    if not isinstance(cfg.output, S3Location) or clients is None:
        return None
    key = status_key(cfg.output.key, cfg.run_id, task_name(cfg))
    uri = f"s3://{cfg.output.bucket}/{key}"
    try:
        _status_client(clients).put_object(
            Bucket=cfg.output.bucket,
            Key=key,
            # The dataset too, which a failed run has no manifest to name it by:
            # `dsjob runs ls --dataset` filters on it (older objects lack it).
            Body=json.dumps({**status, **_dataset(cfg)}).encode(),
            ContentType="application/json",
        )
    except Exception as exc:  # noqa: BLE001 - best effort by contract: log and go on
        LOGGER.warning("could not write the status object", extra={"uri": uri, "error": str(exc)})
        return None
    LOGGER.info("status written", extra={"uri": uri})
    return uri


def _dataset(cfg: JobConfig) -> dict[str, str]:
    """``{"dataset": ...}`` as the run publishes it; empty where a task cannot know it yet.

    A fan-out's reduce and commit tasks learn an unset dataset from the map records,
    so only a map task (or any task given the parameter) names it here.
    """
    if cfg.phase == "single":
        return {"dataset": cfg.dataset}
    if cfg.phase != "map" and cfg.sources.get("dataset") not in ("flag", "env", "ssm"):
        return {}
    from dsjob.fanout_tasks import dataset_of  # noqa: PLC0415 - fan-out tasks only

    try:
        return {"dataset": dataset_of(cfg)}
    except DsjobError:
        return {}


def _status_client(clients: Clients) -> Any:  # noqa: ANN401 - a boto3 client is dynamically typed
    """An S3 client with short timeouts and two attempts, so a dead endpoint costs seconds."""
    from botocore.config import Config  # noqa: PLC0415

    # Botocore retry config: https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
    config = Config(
        retries={"mode": "standard", "total_max_attempts": _STATUS_ATTEMPTS},
        connect_timeout=_STATUS_TIMEOUT_S,
        read_timeout=_STATUS_TIMEOUT_S,
    )
    return clients.s3_with(config)
