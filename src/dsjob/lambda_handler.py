"""AWS Lambda entry point: the job `dsjob run` runs, with the event's fields as overrides.

The `lambda` image (docker/Dockerfile) starts `python -m awslambdaric
dsjob.lambda_handler.handler`. The configuration is resolved exactly as for `dsjob run`
(flags > DSJOB_* environment > SSM), where the event's fields play the flags: per-run
overrides such as `{"input": "s3://bucket/key", "run-id": "..."}` (`input_key` and
`input-key` both name the `input-key` parameter). The return value is the JSON status
`dsjob run` prints as its last line; a failure raises, so Lambda's own retries and
dead-letter queue apply (https://docs.aws.amazon.com/lambda/latest/dg/invocation-retries.html).

The raised exception is named for the run's exit code as the workflow names it
(`Dsjob.Transient`, `Dsjob.Input`, ...: dsjob.errors.error_name), and its message is
the failed run's JSON status line. The runtime interface client reports the class name
as the invocation's `errorType`, which Step Functions uses as the error name of the
Lambda task (Step Functions Developer Guide, "Handling errors in Step Functions
workflows"): the state machine retries and catches the same names on both computes.

Lambda's limits are checked before any work starts
(https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html):
- the file system is read-only except /tmp: the work directory goes there;
- /tmp holds what its ephemeral-storage setting allows (512 MB by default);
- memory is AWS_LAMBDA_FUNCTION_MEMORY_SIZE MB: DuckDB's limit derives from it;
- an invocation ends after 15 minutes: an input predicted to take longer is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from dsjob.config import PARAM_NAMES, JobConfig, S3Location
from dsjob.errors import ConfigError, DsjobError, ExitCode, InputError, error_name

LOGGER = logging.getLogger(__name__)

TMP = Path("/tmp")  # noqa: S108 - Lambda's only writable path
MAX_SECONDS = 15 * 60
# Throughput assumed for the prediction: the built-in step measured 51 MB/s on a busy
# 2-core box at 512 MiB (bench/results.md); Lambda gives 1 vCPU per 1,769 MB, so this
# stays on the safe side for most memory sizes.
BYTES_PER_SECOND = 20 * 10**6
# DuckDB gets this share of the function's memory; the rest is Python, boto3, pandas.
MEMORY_SHARE = 0.6
# Room /tmp needs per input byte: the download, DuckDB's spill and the output.
TMP_FACTOR = 3


class WorkflowError(Exception):
    """A failed run, raised under its workflow error name; the message is its status line."""

    exit_code: ExitCode = ExitCode.INTERNAL


# One subclass per exit code, named Dsjob.<Name>: awslambdaric reports type(exc).__name__.
WORKFLOW_ERRORS: dict[ExitCode, type[WorkflowError]] = {
    code: type(error_name(code), (WorkflowError,), {"exit_code": code, "__module__": __name__})
    for code in ExitCode
    if code is not ExitCode.OK
}


def workflow_error(exc: BaseException, run_id: str | None) -> WorkflowError:
    """The exception the handler raises for ``exc``: named by its exit code, status as message.

    An exception that is no DsjobError is an internal error (exit 1), as at the CLI edge.
    """
    code = exc.exit_code if isinstance(exc, DsjobError) else ExitCode.INTERNAL
    from dsjob.status import failure_status  # noqa: PLC0415 - keeps the cold start light

    return WORKFLOW_ERRORS[code](json.dumps(failure_status(exc, run_id=run_id)))


class _Context(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def flags_from_event(event: object) -> dict[str, str | None]:
    """The event's fields as `dsjob run` flags; an unknown field is a config error."""
    if not isinstance(event, dict):
        msg = f"the event must be a JSON object of dsjob parameters, not {type(event).__name__}"
        raise ConfigError(msg)
    flags: dict[str, str | None] = dict.fromkeys(PARAM_NAMES)
    flags["param-prefix"] = None
    for key, value in event.items():
        name = str(key).replace("_", "-").lower()
        if name not in flags:
            known = ", ".join(sorted(flags))
            msg = f"unknown event field {key!r}: expected one of {known}"
            raise ConfigError(msg)
        flags[name] = None if value is None else str(value)
    return flags


def apply_limits(flags: dict[str, str | None], env: dict[str, str] | os._Environ[str]) -> None:
    """Per-run defaults that Lambda needs: work dir under /tmp, DuckDB memory from the size."""
    if not flags.get("work-root"):
        flags["work-root"] = str(TMP)
    root = Path(flags["work-root"] or TMP)
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix="dsjob-lambda-"):
            pass
    except OSError as exc:
        msg = f"work-root {root} is not writable ({exc}); on Lambda only /tmp is"
        raise ConfigError(msg) from exc
    size = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if size and not flags.get("memory-limit"):
        try:
            megabytes = int(size)
        except ValueError as exc:
            msg = f"AWS_LAMBDA_FUNCTION_MEMORY_SIZE={size!r} is not a whole number of MB"
            raise ConfigError(msg) from exc
        flags["memory-limit"] = f"{int(megabytes * MEMORY_SHARE)}MB"


def check_input(size: int, *, tmp_free: int, remaining_s: float) -> None:
    """Refuse an input that cannot fit /tmp or finish before Lambda's time runs out."""
    if size * TMP_FACTOR > tmp_free:
        msg = (
            f"the input is {size / 1e6:.0f} MB and /tmp has {tmp_free / 1e6:.0f} MB free; "
            f"the run needs about {TMP_FACTOR}x the input: raise the function's ephemeral "
            "storage, or run it on Fargate (compute: fargate)"
        )
        raise InputError(msg)
    predicted = size / BYTES_PER_SECOND
    budget = min(remaining_s, MAX_SECONDS)
    if predicted > budget:
        msg = (
            f"the input is {size / 1e6:.0f} MB: predicted {predicted / 60:.1f} min, more than "
            f"the {budget / 60:.1f} min this invocation has; run it on Fargate (compute: fargate)"
        )
        raise InputError(msg)


def _input_size(cfg: JobConfig) -> int:
    """Bytes of the job's input: a HEAD on S3, or the local file's size."""
    if isinstance(cfg.input, S3Location):
        from dsjob.aws import Clients, aws_errors, translate  # noqa: PLC0415

        try:
            head = Clients().s3.head_object(Bucket=cfg.input.bucket, Key=cfg.input.key)
        except aws_errors() as exc:
            # HEAD answers a missing key with a bare 404: named, it is an input error (3).
            raise translate(
                exc, "reading the input's size", bucket=cfg.input.bucket, key=cfg.input.key
            ) from exc
        return int(head["ContentLength"])
    return cfg.input.stat().st_size if cfg.input.is_file() else 0


def handler(event: dict[str, Any], context: _Context | None) -> dict[str, Any]:
    """Run the job once for this event and return its JSON status; raise on failure.

    Raises:
        WorkflowError: a ``Dsjob.<Name>`` subclass for the failure's exit code.
    """
    run_id = event.get("run-id") or event.get("run_id") if isinstance(event, dict) else None
    try:
        return _run(event, context)
    except Exception as exc:  # a failed run of any kind leaves as its workflow error
        raise workflow_error(exc, str(run_id) if run_id else None) from exc


def _run(event: object, context: _Context | None) -> dict[str, Any]:
    from dsjob import runner  # noqa: PLC0415 - the job's imports, after the runtime is up

    flags = flags_from_event(event)
    apply_limits(flags, os.environ)
    remaining = context.get_remaining_time_in_millis() / 1000 if context else MAX_SECONDS

    def before_work(cfg: JobConfig) -> None:
        root = Path(flags["work-root"] or TMP)
        check_input(_input_size(cfg), tmp_free=shutil.disk_usage(root).free, remaining_s=remaining)

    summary = runner.run_from_flags(flags, progress=False, on_config=before_work)
    # The status is the line `dsjob run` prints last: take it from the same function.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        runner.print_summary(summary)
    status: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    LOGGER.info("run finished", extra={"status": status})
    return status
