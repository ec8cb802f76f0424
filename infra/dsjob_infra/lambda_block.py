"""One Lambda invocation of the job inside a retryable block, with the Fargate block's names.

    Invoke function ─ok→ Done
      │ Lambda service errors, throttling: retried here; then Dsjob.TaskNotPlaced
      │ Dsjob.<Name> (raised by dsjob.lambda_handler) → Parse → fail with that name,
      │   cause = the run's JSON status line (the exception's message)
      │ Runtime.OutOfMemory, Runtime.ExitError "signal: killed" → Dsjob.OutOfMemory
      └ anything else (Sandbox.Timedout, Lambda.Unknown, Runtime.*) fails under its own name
    Block retry: RETRYABLE_ERRORS (Dsjob.Transient), as on Fargate.

The handler raises an exception named for the run's exit code (dsjob.errors.error_name),
and Step Functions reports a function error under its errorType, with the error payload
(errorMessage, errorType, stackTrace) as a JSON Cause (Step Functions Developer Guide,
"Handling errors in Step Functions workflows", "Handle transient Lambda service
exceptions"). Unhandled errors such as timeouts are Sandbox.Timedout or Lambda.Unknown;
a function killed for memory reports Runtime.OutOfMemory or Runtime.ExitError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from dsjob.errors import ExitCode, error_name
from dsjob_infra.job_block import EXIT_CODE_ERRORS, MAX_RETRY_DELAY, RETRYABLE_ERRORS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from constructs import Construct

    from dsjob_infra.function import JobFunction
    from dsjob_infra.settings import PipelineSettings

# Step Functions Developer Guide, "Handle transient Lambda service exceptions": the
# service's own 500s, and TooManyRequestsException at the concurrency limit.
LAMBDA_SERVICE_ERRORS = [
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
MEMORY_ERRORS = ["Runtime.OutOfMemory", "Runtime.ExitError"]
# Room past the function's own timeout before the state gives up on the invocation.
STATE_TIMEOUT_MARGIN = Duration.minutes(1)


def event_field(variable: str) -> str:
    """The handler's event field for a container variable: DSJOB_RUN_ID -> run-id."""
    return variable.removeprefix("DSJOB_").lower().replace("_", "-")


class LambdaJobBlock:
    """Builds the block for one run; the same interface as job_block.JobBlock."""

    def __init__(self, scope: Construct, settings: PipelineSettings, function: JobFunction) -> None:
        """Args: the function the block invokes."""
        self._scope = scope
        self._settings = settings
        self._function = function

    def build(
        self, prefix: str, environment: Mapping[str, str], status_key: str | None = None
    ) -> sfn.Parallel:
        """The block. ``environment``: variable -> a JSONPath (``$.``...) or a literal value.

        The variables become the event's fields (``DSJOB_RUN_ID`` -> ``run-id``), which the
        handler takes as ``dsjob run`` flags; "" means not set, as for the container.
        Its output is ``runId`` and ``status`` (the run's JSON status). ``status_key`` (the
        container block's status object) is not read: the handler answers with the status.
        """
        del status_key
        scope, p, settings = self._scope, prefix, self._settings
        event = {
            event_field(name): sfn.JsonPath.string_at(value) if value.startswith("$") else value
            for name, value in environment.items()
        }
        invoke = tasks.LambdaInvoke(
            scope,
            f"{p}Invoke function",
            lambda_function=self._function.function,
            payload=sfn.TaskInput.from_object(event),
            # The retry below replaces CDK's default one, adding TooManyRequestsException.
            retry_on_service_exceptions=False,
            task_timeout=sfn.Timeout.duration(
                Duration.minutes(settings.lambda_timeout_minutes).plus(STATE_TIMEOUT_MARGIN)
            ),
            result_selector={"status": sfn.JsonPath.object_at("$.Payload")},
            result_path="$.lambda",
        )
        invoke.add_retry(
            errors=LAMBDA_SERVICE_ERRORS,
            interval=Duration.seconds(settings.retry_interval_seconds),
            backoff_rate=2,
            max_attempts=settings.transient_retries,
            max_delay=MAX_RETRY_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )
        not_invoked = sfn.Fail(
            scope,
            f"{p}Function not invoked",
            error="Dsjob.TaskNotPlaced",
            cause_path="$.failure.Cause",
        )
        invoke.add_catch(not_invoked, errors=LAMBDA_SERVICE_ERRORS, result_path="$.failure")
        parse = sfn.Pass(
            scope,
            f"{p}Parse function error",
            parameters={
                "payload": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.failure.Cause"))
            },
            result_path="$.functionError",
        )
        parse.next(
            sfn.Fail(
                scope,
                f"{p}Job error",
                error_path="$.failure.Error",
                cause_path="$.functionError.payload.errorMessage",
            )
        )
        invoke.add_catch(parse, errors=list(EXIT_CODE_ERRORS.values()), result_path="$.failure")
        invoke.add_catch(self._memory(p), errors=MEMORY_ERRORS, result_path="$.failure")
        invoke.next(
            sfn.Pass(
                scope,
                f"{p}Done",
                parameters={
                    "runId": sfn.JsonPath.string_at("$.run.id"),
                    "status": sfn.JsonPath.object_at("$.lambda.status"),
                },
            )
        )
        block = sfn.Parallel(
            scope,
            f"{p}Run job",
            result_selector={
                "runId": sfn.JsonPath.string_at("$[0].runId"),
                "status": sfn.JsonPath.object_at("$[0].status"),
            },
        )
        block.branch(invoke)
        block.add_retry(
            errors=RETRYABLE_ERRORS,
            interval=Duration.seconds(settings.retry_interval_seconds),
            backoff_rate=2,
            max_attempts=settings.transient_retries,
            max_delay=MAX_RETRY_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return block

    def _memory(self, p: str) -> sfn.Choice:
        """Killed for memory -> Dsjob.OutOfMemory (final); another exit keeps its own name."""
        scope = self._scope
        advice = (
            f"raise the function memory (-c lambdaMemoryMiB=..., now "
            f"{self._settings.lambda_memory_mib} MiB) or run it on Fargate (compute: fargate)"
        )
        killed = sfn.Fail(
            scope,
            f"{p}Function killed for memory",
            error=error_name(ExitCode.OUT_OF_MEMORY),
            cause_path=sfn.JsonPath.format(
                f"the function ran out of memory: {advice}; Lambda said: {{}}",
                sfn.JsonPath.string_at("$.failure.Cause"),
            ),
        )
        other_exit = sfn.Fail(
            scope,
            f"{p}Function exited",
            error_path="$.failure.Error",
            cause_path="$.failure.Cause",
        )
        return (
            sfn.Choice(scope, f"{p}Killed for memory?")
            .when(
                sfn.Condition.or_(
                    sfn.Condition.string_equals("$.failure.Error", "Runtime.OutOfMemory"),
                    sfn.Condition.string_matches("$.failure.Cause", "*signal: killed*"),
                ),
                killed,
            )
            .otherwise(other_exit)
        )
