"""The Step Functions workflow that runs the job on Fargate, once or once per input object.

Shape (JSONPath)::

    Defaults → Merge → Fan out? ──no──→ Single run → [Run job block] ──→ Succeeded
                            └─yes─→ Distributed Map over s3://input/<prefix>
                                      └ per object: [Run job block]
    any failure ─→ Catch → Job failed (Fail; error = Dsjob.*, cause = the job's status line)

The run job block is a one-branch Parallel, because only Task, Parallel and
Map states can Retry and the decision "is this retryable?" is made by states
*after* the ECS task, from its exit code::

    Run task (.sync) ─ok─→ Has exit code? ─no─→ Fail Dsjob.TaskFailedToStart  (retried)
      │ States.TaskFailed          │ yes
      └→ Parse cause ──────────────┤→ exit 0 → Done
                                   └→ Read status line (CloudWatch Logs) → Classify
                                        5 → Fail Dsjob.Transient            (retried)
                                        2/3/4/143/other → Fail Dsjob.Config/Input/UserCode/
                                                          Terminated/Failed (not retried)

ECS .sync reports a non-zero exit as ``States.TaskFailed`` whose cause is the
task description as JSON; parsing it gives the same shape as a successful
result, so one Choice classifies both.  The block's Retry covers only
``Dsjob.Transient`` and ``Dsjob.TaskFailedToStart`` (full jitter, bounded
delay and attempts); ECS API errors (capacity, 5xx) are retried on the Run
task state itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, Token
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from dsjob_infra.compute import CONTAINER_NAME, LOG_STREAM_PREFIX, retention

if TYPE_CHECKING:
    from dsjob_infra.settings import PipelineSettings

# Execution input field -> the job's override variable. A missing field becomes "",
# which the job treats as "not set" (the SSM parameter applies).
INPUT_OVERRIDES = {
    "outputPrefix": "DSJOB_OUTPUT_PREFIX",
    "outputFormat": "DSJOB_OUTPUT_FORMAT",
    "dataset": "DSJOB_DATASET",
    "modelKey": "DSJOB_MODEL_KEY",
    "scriptKey": "DSJOB_SCRIPT_KEY",
    "packageKey": "DSJOB_PACKAGE_KEY",
    "transformKey": "DSJOB_TRANSFORM_KEY",
}
# The job's exit codes (src/dsjob/errors.py) -> the error name the workflow fails with.
EXIT_CODE_ERRORS = {
    5: "Dsjob.Transient",
    2: "Dsjob.Config",
    3: "Dsjob.Input",
    4: "Dsjob.UserCode",
    143: "Dsjob.Terminated",
}
RETRYABLE_ERRORS = ["Dsjob.Transient", "Dsjob.TaskFailedToStart"]
ECS_API_ERRORS = ["ECS.AmazonECSException", "ECS.ServerException"]
MAX_RETRY_DELAY = Duration.minutes(10)


class JobWorkflow(Construct):
    """The state machine, its log group, and the run job block it uses twice."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings,
        cluster: ecs.ICluster,
        task_definition: ecs.FargateTaskDefinition,
        container: ecs.ContainerDefinition,
        security_group: ec2.ISecurityGroup,
        job_log_group: logs.ILogGroup,
        input_bucket: s3.IBucket,
    ) -> None:
        """Args: the ECS pieces the task runs with, and the bucket a fan-out lists."""
        super().__init__(scope, construct_id)
        self._settings = settings
        self._cluster = cluster
        self._task_definition = task_definition
        self._container = container
        self._security_group = security_group
        self._job_log_group = job_log_group

        failed = sfn.Fail(
            self,
            "Job failed",
            error_path="$.error.Error",
            cause_path="$.error.Cause",
        )
        succeeded = sfn.Succeed(self, "Succeeded")
        defaults = sfn.Pass(
            self,
            "Defaults",
            parameters={
                "defaults": {
                    "inputKey": "",
                    "inputPrefix": "",
                    **dict.fromkeys(INPUT_OVERRIDES, ""),
                },
                "input": sfn.JsonPath.entire_payload,
            },
        )
        merge = sfn.Pass(
            self,
            "Merge input over defaults",
            parameters={
                "job": sfn.JsonPath.json_merge(
                    sfn.JsonPath.object_at("$.defaults"), sfn.JsonPath.object_at("$.input")
                )
            },
        )
        single = sfn.Pass(
            self,
            "Single run",
            parameters={
                "job": sfn.JsonPath.object_at("$.job"),
                "inputKey": sfn.JsonPath.string_at("$.job.inputKey"),
                "runId": sfn.JsonPath.execution_name,
            },
        )
        single_block = self._job_block("").add_catch(failed, result_path="$.error")
        fan_out = self._fan_out(input_bucket).add_catch(failed, result_path="$.error")

        definition = defaults.next(merge).next(
            sfn.Choice(self, "Fan out?")
            .when(
                sfn.Condition.not_(sfn.Condition.string_equals("$.job.inputPrefix", "")),
                fan_out.next(succeeded),
            )
            .otherwise(single.next(single_block).next(succeeded))
        )
        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"/aws/vendedlogs/states/ds-preprocessing-{settings.environment}",
            retention=retention(settings.log_retention_days),
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"ds-preprocessing-{settings.environment}",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )

    def _fan_out(self, input_bucket: s3.IBucket) -> sfn.DistributedMap:
        """One ECS task per object under the execution input's ``inputPrefix``."""
        fan_out = sfn.DistributedMap(
            self,
            "Run per object",
            item_reader=sfn.S3ObjectsItemReader(
                bucket=input_bucket, prefix=sfn.JsonPath.string_at("$.job.inputPrefix")
            ),
            item_selector={
                "job": sfn.JsonPath.object_at("$.job"),
                "inputKey": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
                "runId": sfn.JsonPath.format(
                    "{}-{}",
                    sfn.JsonPath.execution_name,
                    sfn.JsonPath.string_at("$$.Map.Item.Index"),
                ),
            },
            max_concurrency=self._settings.max_concurrency,
            tolerated_failure_percentage=0,
            map_execution_type=sfn.StateMachineType.STANDARD,
            # Per-object results stay in the child executions; the parent output stays small.
            result_path=sfn.JsonPath.DISCARD,
        )
        skip_folder = sfn.Pass(self, "Skip folder marker")
        fan_out.item_processor(
            sfn.Choice(self, "Folder marker?")
            .when(sfn.Condition.string_matches("$.inputKey", "*/"), skip_folder)
            .otherwise(self._job_block("Item "))
        )
        return fan_out

    def _job_block(self, prefix: str) -> sfn.Parallel:
        """Run task → classify its exit code, wrapped so the classification can be retried."""
        run = self._run_task(prefix)
        parse = sfn.Pass(
            self,
            f"{prefix}Parse failed task",
            parameters={
                "runId": sfn.JsonPath.string_at("$.runId"),
                "task": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.failure.Cause")),
            },
        )
        run.add_catch(parse, errors=["States.TaskFailed"], result_path="$.failure")
        not_started = sfn.Fail(
            self,
            f"{prefix}Task failed to start",
            error="Dsjob.TaskFailedToStart",
            cause_path=sfn.JsonPath.format(
                "task {} stopped before its container exited: {}",
                sfn.JsonPath.string_at("$.task.TaskArn"),
                sfn.JsonPath.string_at("$.task.StoppedReason"),
            ),
        )
        done = sfn.Pass(
            self,
            f"{prefix}Done",
            parameters={
                "runId": sfn.JsonPath.string_at("$.runId"),
                "taskArn": sfn.JsonPath.string_at("$.task.TaskArn"),
            },
        )
        classify = sfn.Choice(self, f"{prefix}Classify exit code")
        for code, error in EXIT_CODE_ERRORS.items():
            classify.when(
                sfn.Condition.number_equals("$.task.Containers[0].ExitCode", code),
                sfn.Fail(self, f"{prefix}{error}", error=error, cause_path="$.statusLine"),
            )
        classify.otherwise(
            sfn.Fail(self, f"{prefix}Other exit", error="Dsjob.Failed", cause_path="$.statusLine")
        )
        status_line = self._read_status_line(prefix, classify)
        exit_code = (
            sfn.Choice(self, f"{prefix}Exit code 0?")
            .when(sfn.Condition.number_equals("$.task.Containers[0].ExitCode", 0), done)
            .otherwise(status_line)
        )
        has_exit_code = (
            sfn.Choice(self, f"{prefix}Has exit code?")
            .when(sfn.Condition.is_present("$.task.Containers[0].ExitCode"), exit_code)
            .otherwise(not_started)
        )
        run.next(has_exit_code)
        parse.next(has_exit_code)
        block = sfn.Parallel(
            self,
            f"{prefix}Run job",
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

    def _run_task(self, prefix: str) -> tasks.EcsRunTask:
        environment = [
            tasks.TaskEnvironmentVariable(
                name="DSJOB_RUN_ID", value=sfn.JsonPath.string_at("$.runId")
            ),
            tasks.TaskEnvironmentVariable(
                name="DSJOB_INPUT_KEY", value=sfn.JsonPath.string_at("$.inputKey")
            ),
            *(
                tasks.TaskEnvironmentVariable(
                    name=variable, value=sfn.JsonPath.string_at(f"$.job.{field}")
                )
                for field, variable in INPUT_OVERRIDES.items()
            ),
        ]
        run = tasks.EcsRunTask(
            self,
            f"{prefix}Run task",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            cluster=self._cluster,
            task_definition=self._task_definition,
            launch_target=tasks.EcsFargateLaunchTarget(
                platform_version=ecs.FargatePlatformVersion.LATEST
            ),
            assign_public_ip=True,
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[self._security_group],
            container_overrides=[
                tasks.ContainerOverride(
                    container_definition=self._container, environment=environment
                )
            ],
            propagated_tag_source=ecs.PropagatedTagSource.TASK_DEFINITION,
            result_path="$.task",
        )
        run.add_retry(
            errors=ECS_API_ERRORS,
            interval=Duration.seconds(self._settings.retry_interval_seconds),
            backoff_rate=2,
            max_attempts=self._settings.transient_retries,
            max_delay=MAX_RETRY_DELAY,
            jitter_strategy=sfn.JitterType.FULL,
        )
        return run

    def _read_status_line(self, prefix: str, then: sfn.IChainable) -> sfn.IChainable:
        """Fetch the last line the job logged: its one-line JSON status (exit code, error)."""
        task_arn_parts = sfn.JsonPath.string_split(sfn.JsonPath.string_at("$.task.TaskArn"), "/")
        # The id is the ARN's last segment in both the short and the long ARN format.
        last_index = sfn.JsonPath.math_add(
            Token.as_number(sfn.JsonPath.array_length(task_arn_parts)), -1
        )
        task_id = sfn.JsonPath.array_get_item(task_arn_parts, Token.as_number(last_index))
        read = tasks.CallAwsService(
            self,
            f"{prefix}Read status line",
            service="cloudwatchlogs",
            action="getLogEvents",
            iam_action="logs:GetLogEvents",
            iam_resources=[
                self._job_log_group.log_group_arn,
                f"{self._job_log_group.log_group_arn}:*",
            ],
            parameters={
                "LogGroupName": self._job_log_group.log_group_name,
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
            self,
            f"{prefix}Status line",
            parameters={
                "runId": sfn.JsonPath.string_at("$.runId"),
                "task": sfn.JsonPath.object_at("$.task"),
                "statusLine": sfn.JsonPath.string_at("$.log.events[0].Message"),
            },
        )
        without_line = sfn.Pass(
            self,
            f"{prefix}No status line",
            parameters={
                "runId": sfn.JsonPath.string_at("$.runId"),
                "task": sfn.JsonPath.object_at("$.task"),
                "statusLine": sfn.JsonPath.format(
                    "exit code {}; the job logged no status line",
                    sfn.JsonPath.string_at("$.task.Containers[0].ExitCode"),
                ),
            },
        )
        read.add_catch(without_line, result_path="$.logError")
        read.next(
            sfn.Choice(self, f"{prefix}Logged a line?")
            .when(sfn.Condition.is_present("$.log.events[0].Message"), with_line)
            .otherwise(without_line)
        )
        with_line.next(then)
        without_line.next(then)
        return read
