"""One ECS task of the job, run and classified inside a retryable block (a one-branch Parallel).

    Run task (.sync) ─ok──────────────┐
      │ States.TaskFailed → Parse cause┤→ Pick job container (by name) → Classify stop
      │ AmazonECS.Unknown, ECS API errors: retried here (RunTask Failures, capacity),
      │   then Dsjob.TaskNotPlaced with RunTask's answer as the cause
    Classify stop:
      StopCode SpotInterruption/TerminationNotice → Dsjob.Transient        (retried)
      no exit code: CannotPullContainerError      → Dsjob.ImagePullFailed  (final)
                    anything else                 → Dsjob.TaskFailedToStart (retried)
      exit 137 or reason OutOfMemoryError         → Dsjob.OutOfMemory      (final, raise memory)
      exit 0                                      → Done
      other → Read status object (S3; fallback: the last log line) → Classify exit code:
              one Fail per dsjob.errors.ExitCode (Dsjob.<Name>), else Dsjob.Failed

Only Task, Parallel and Map states can Retry, and the retry decision is made by the
states *after* the task, hence the Parallel around them. The task description is the
shape of ECS DescribeTasks (ECS API Reference, "Task", "Container"): ``.sync`` returns
it on success and, on a non-zero essential exit, fails with ``States.TaskFailed`` and the
same object as a JSON ``Cause`` (Step Functions Developer Guide, "Run Amazon ECS or
Fargate tasks with Step Functions").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from dsjob.errors import ExitCode, error_name
from dsjob_infra.compute import CONTAINER_NAME, LOG_STREAM_PREFIX

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aws_cdk import aws_s3 as s3
    from constructs import Construct

    from dsjob_infra.compute import JobCompute
    from dsjob_infra.settings import PipelineSettings


# The job's exit codes (src/dsjob/errors.py) -> the error the workflow fails with.
EXIT_CODE_ERRORS = {int(code): error_name(code) for code in ExitCode if code is not ExitCode.OK}
RETRYABLE_ERRORS = [error_name(ExitCode.TRANSIENT), "Dsjob.TaskFailedToStart"]
# RunTask API errors. A RunTask answer with a Failures list (no capacity, placement)
# reaches .sync as AmazonECS.Unknown; it is retried like an API error.
ECS_API_ERRORS = ["ECS.AmazonECSException", "ECS.ServerException", "AmazonECS.Unknown"]
# ECS API Reference, "Task": stopCode values for an interruption the job did not cause.
INTERRUPTION_STOP_CODES = ["SpotInterruption", "TerminationNotice"]
OOM_EXIT = 137  # SIGKILL by the kernel's OOM killer (128 + 9)
MAX_RETRY_DELAY = Duration.minutes(10)


class JobBlock:
    """Builds the block for one phase: its states get a name prefix, unique in the machine."""

    def __init__(
        self,
        scope: Construct,
        settings: PipelineSettings,
        compute: JobCompute,
        output_bucket: s3.IBucket,
    ) -> None:
        """Args: the ECS pieces the task runs with; the bucket holding the status objects."""
        self._scope = scope
        self._settings = settings
        self._compute = compute
        self._output_bucket = output_bucket

    def build(
        self, prefix: str, environment: Mapping[str, str], status_key: str | None = None
    ) -> sfn.Parallel:
        """The block. ``environment``: variable -> a JSONPath (``$.``...) or a literal value.

        Its input carries ``run.id`` and ``run.statusKey``; its output is ``runId``, ``taskArn``.
        ``status_key`` is the task's own status object key (an intrinsic such as
        ``States.Format``), default ``$.run.statusKey`` (a single run's).
        """
        scope, p = self._scope, prefix
        status_key = status_key or sfn.JsonPath.string_at("$.run.statusKey")
        run = self._run_task(p, environment)
        parse = sfn.Pass(
            scope,
            f"{p}Parse failed task",
            parameters={
                "task": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.failure.Cause"))
            },
            result_path="$.ecs",
        )
        run.add_catch(parse, errors=["States.TaskFailed"], result_path="$.failure")
        # Still no task after the retries: name it, with RunTask's own answer as the cause.
        not_placed = sfn.Fail(
            scope, f"{p}Task not placed", error="Dsjob.TaskNotPlaced", cause_path="$.failure.Cause"
        )
        run.add_catch(not_placed, errors=ECS_API_ERRORS, result_path="$.failure")
        # A filter always yields a list (Step Functions, "Paths"); the GuardDuty sidecar
        # may be listed first, so the job container is found by name, not Containers[0].
        pick = sfn.Pass(
            scope,
            f"{p}Pick job container",
            parameters={
                "containers": sfn.JsonPath.list_at(
                    f"$.ecs.task.Containers[?(@.Name == '{CONTAINER_NAME}')]"
                )
            },
            result_path="$.picked",
        )
        container = sfn.Pass(
            scope,
            f"{p}Job container",
            parameters={"container": sfn.JsonPath.object_at("$.picked.containers[0]")},
            result_path="$.picked",
        )
        run.next(pick)
        parse.next(pick)
        pick.next(container).next(self._classify(p, status_key))
        block = sfn.Parallel(
            scope,
            f"{p}Run job",
            result_selector={
                "runId": sfn.JsonPath.string_at("$[0].runId"),
                "taskArn": sfn.JsonPath.string_at("$[0].taskArn"),
            },
        )
        block.branch(run)
        block.add_retry(
            errors=RETRYABLE_ERRORS,
            interval=Duration.seconds(self._settings.retry_interval_seconds),
            backoff_rate=2,
            max_attempts=self._settings.transient_retries,
            max_delay=MAX_RETRY_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return block

    def _fail(self, name: str, error: str, cause: str) -> sfn.Fail:
        return sfn.Fail(self._scope, name, error=error, cause_path=cause)

    def _classify(self, p: str, status_key: str) -> sfn.Choice:
        scope = self._scope
        task_arn = sfn.JsonPath.string_at("$.ecs.task.TaskArn")
        exit_path = "$.picked.container.ExitCode"
        memory = self._settings.memory_mib
        advice = f"raise the task memory (-c memoryMiB=..., now {memory} MiB)"
        interrupted = self._fail(
            f"{p}Interrupted",
            error_name(ExitCode.TRANSIENT),
            sfn.JsonPath.format(
                "task {} was stopped by AWS ({}); retried",
                task_arn,
                sfn.JsonPath.string_at("$.ecs.task.StopCode"),
            ),
        )
        pull_failed = self._fail(
            f"{p}Image pull failed",
            "Dsjob.ImagePullFailed",
            sfn.JsonPath.format(
                "task {} could not pull its image (push it with make ml-push, then "
                "make infra-deploy): {}",
                task_arn,
                sfn.JsonPath.string_at("$.ecs.task.StoppedReason"),
            ),
        )
        not_started = self._fail(
            f"{p}Task failed to start",
            "Dsjob.TaskFailedToStart",
            sfn.JsonPath.format(
                "task {} stopped before its container exited: {}",
                task_arn,
                sfn.JsonPath.string_at("$.ecs.task.StoppedReason"),
            ),
        )
        start_reason = sfn.Condition.is_present("$.ecs.task.StoppedReason")
        never_started = (
            sfn.Choice(scope, f"{p}Why not started?")
            .when(
                sfn.Condition.and_(
                    start_reason,
                    sfn.Condition.string_matches(
                        "$.ecs.task.StoppedReason", "*CannotPullContainerError*"
                    ),
                ),
                pull_failed,
            )
            .when(start_reason, not_started)
            .otherwise(
                self._fail(
                    f"{p}Task failed to start (no reason)",
                    "Dsjob.TaskFailedToStart",
                    sfn.JsonPath.format("task {} stopped before its container exited", task_arn),
                )
            )
        )
        killed = self._fail(
            f"{p}Killed for memory",
            error_name(ExitCode.OUT_OF_MEMORY),
            sfn.JsonPath.format(
                f"task {{}} ran out of memory (exit {{}}, killed by ECS): {advice}",
                task_arn,
                sfn.JsonPath.string_at(exit_path),
            ),
        )
        done = sfn.Pass(
            scope,
            f"{p}Done",
            parameters={"runId": sfn.JsonPath.string_at("$.run.id"), "taskArn": task_arn},
        )
        reason = "$.picked.container.Reason"
        return (
            sfn.Choice(scope, f"{p}Classify stop")
            .when(
                sfn.Condition.and_(
                    sfn.Condition.is_present("$.ecs.task.StopCode"),
                    sfn.Condition.or_(
                        *(
                            sfn.Condition.string_equals("$.ecs.task.StopCode", code)
                            for code in INTERRUPTION_STOP_CODES
                        )
                    ),
                ),
                interrupted,
            )
            .when(sfn.Condition.is_not_present(exit_path), never_started)
            .when(
                sfn.Condition.or_(
                    sfn.Condition.number_equals(exit_path, OOM_EXIT),
                    sfn.Condition.and_(
                        sfn.Condition.is_present(reason),
                        sfn.Condition.string_matches(reason, "OutOfMemoryError*"),
                    ),
                ),
                killed,
            )
            .when(sfn.Condition.number_equals(exit_path, 0), done)
            .otherwise(self._read_status(p, status_key, self._classify_exit(p, exit_path, advice)))
        )

    def _classify_exit(self, p: str, exit_path: str, advice: str) -> sfn.Choice:
        classify = sfn.Choice(self._scope, f"{p}Classify exit code")
        for code, error in EXIT_CODE_ERRORS.items():
            cause = "$.status.line"
            if code == ExitCode.OUT_OF_MEMORY:
                cause = sfn.JsonPath.format(f"{{}} ({advice})", sfn.JsonPath.string_at(cause))
            classify.when(
                sfn.Condition.number_equals(exit_path, code),
                self._fail(f"{p}{error}", error, cause),
            )
        return classify.otherwise(self._fail(f"{p}Other exit", "Dsjob.Failed", "$.status.line"))

    def _read_status(self, p: str, key: str, then: sfn.IChainable) -> sfn.IChainable:
        """The task's own status object at `key`, else its last log line.

        `key` is ``<prefix>status/<run-id>.json`` or ``<prefix>status/<run-id>/<task>.json``.
        The last CloudWatch event is a poor cause (after an OOM it is a progress line, and
        lines over 16 KiB are split), so it is only the fallback when the object is absent.
        """
        scope = self._scope
        read = tasks.CallAwsService(
            scope,
            f"{p}Read status object",
            service="s3",
            action="getObject",
            iam_action="s3:GetObject",
            iam_resources=[self._output_bucket.arn_for_objects("*status/*")],
            parameters={
                "Bucket": self._output_bucket.bucket_name,
                "Key": key,
            },
            # The aws-sdk integration returns a text Body as a string.
            result_selector={"line": sfn.JsonPath.string_at("$.Body")},
            result_path="$.status",
        )
        read.add_catch(self._read_log_line(p, then), result_path="$.statusError")
        read.next(then)
        return read

    def _read_log_line(self, p: str, then: sfn.IChainable) -> sfn.IChainable:
        scope = self._scope
        group = self._compute.log_group
        task_arn_parts = sfn.JsonPath.string_split(
            sfn.JsonPath.string_at("$.ecs.task.TaskArn"), "/"
        )
        last_index = sfn.JsonPath.math_add(
            Token.as_number(sfn.JsonPath.array_length(task_arn_parts)), -1
        )
        # The id is the ARN's last segment in both the short and the long ARN format.
        task_id = sfn.JsonPath.array_get_item(task_arn_parts, Token.as_number(last_index))
        read = tasks.CallAwsService(
            scope,
            f"{p}Read status line",
            service="cloudwatchlogs",
            action="getLogEvents",
            iam_action="logs:GetLogEvents",
            iam_resources=[group.log_group_arn, f"{group.log_group_arn}:*"],
            parameters={
                "LogGroupName": group.log_group_name,
                # awslogs names streams <prefix>/<container>/<task id>.
                "LogStreamName": sfn.JsonPath.format(
                    f"{LOG_STREAM_PREFIX}/{CONTAINER_NAME}/{{}}", task_id
                ),
                "Limit": 1,
                "StartFromHead": False,
            },
            result_selector={"events": sfn.JsonPath.list_at("$.Events")},
            result_path="$.log",
        )
        with_line = sfn.Pass(
            scope,
            f"{p}Status line",
            parameters={"line": sfn.JsonPath.string_at("$.log.events[0].Message")},
            result_path="$.status",
        )
        without_line = sfn.Pass(
            scope,
            f"{p}No status",
            parameters={
                "line": sfn.JsonPath.format(
                    "exit code {}; the job wrote no status",
                    sfn.JsonPath.string_at("$.picked.container.ExitCode"),
                )
            },
            result_path="$.status",
        )
        read.add_catch(without_line, result_path="$.logError")
        read.next(
            sfn.Choice(scope, f"{p}Logged a line?")
            .when(sfn.Condition.is_present("$.log.events[0].Message"), with_line)
            .otherwise(without_line)
        )
        with_line.next(then)
        without_line.next(then)
        return read

    def _run_task(self, p: str, environment: Mapping[str, str]) -> sfn.CustomState:
        """RunTask.sync written out, so the role can be scoped by hand (see workflow.py)."""
        compute = self._compute
        stack = Stack.of(self._scope)
        subnets = compute.vpc.public_subnets
        variables = [
            {"Name": name, "Value.$": value}
            if value.startswith("$")
            else {"Name": name, "Value": value}
            for name, value in environment.items()
        ]
        state = {
            "Type": "Task",
            "Resource": f"arn:{stack.partition}:states:::ecs:runTask.sync",
            "Parameters": {
                "Cluster": compute.cluster.cluster_arn,
                "TaskDefinition": compute.task_definition.task_definition_arn,
                "LaunchType": "FARGATE",
                "PlatformVersion": "LATEST",
                "NetworkConfiguration": {
                    "AwsvpcConfiguration": {
                        "Subnets": [s.subnet_id for s in subnets],
                        "SecurityGroups": [compute.security_group.security_group_id],
                        "AssignPublicIp": "ENABLED",
                    }
                },
                "Overrides": {
                    "ContainerOverrides": [{"Name": CONTAINER_NAME, "Environment": variables}]
                },
                # Tags the task, which needs ecs:TagResource on it (granted in workflow.py).
                "PropagateTags": "TASK_DEFINITION",
            },
            # The state fails with States.Timeout; Step Functions then stops the task.
            "TimeoutSeconds": self._settings.task_timeout_minutes * 60,
            "ResultSelector": {"task.$": "$"},
            "ResultPath": "$.ecs",
        }
        run = sfn.CustomState(self._scope, f"{p}Run task", state_json=state)
        run.add_retry(
            errors=ECS_API_ERRORS,
            interval=Duration.seconds(self._settings.retry_interval_seconds),
            backoff_rate=2,
            max_attempts=self._settings.transient_retries,
            max_delay=MAX_RETRY_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return run
