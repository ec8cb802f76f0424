"""The Step Functions workflow: one job run, or a map → reduce → commit fan-out over a prefix.

Shape (JSONPath)::

    Defaults → Merge → run id (monthly-YYYY-MM from scheduledTime, else the execution name)
      → status key → Fan out?
        no  → [single job block] ───────────────────────────────────────────→ Succeeded
        yes → List prefix → Empty? → Fail Dsjob.EmptyInput
                 └→ List data objects → no data object on the first page? → Fail Dsjob.EmptyInput
                 └→ Map objects (distributed, ItemReader ListObjectsV2, ResultWriter → S3;
                      per item: size > 0, not a folder marker or hidden name → [map job block])
                 └→ Reduce partitions (Map over 0..P-1 → [reduce job block])
                 └→ [commit job block] → Succeeded
    any failure → Job failed (error = Dsjob.*, cause = the job's status object)

A failed distributed map reports only ``States.ExceedToleratedFailureThreshold``; the
failed child execution's own error and cause are looked up (ListMapRuns →
ListExecutions FAILED → DescribeExecution) so the shard's error becomes the cause.
Each task gets the environment overrides of the fan-out task contract (contracts.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from dsjob.dataobjects import HIDDEN_NAME_STARTS
from dsjob_infra.compute import LOGS_KMS_REASON, JobCompute, retention
from dsjob_infra.function import JobFunction
from dsjob_infra.job_block import JobBlock
from dsjob_infra.lambda_block import LambdaJobBlock
from dsjob_infra.nag import skip_checkov
from dsjob_infra.storage import MAP_RESULTS_PREFIX

if TYPE_CHECKING:
    from dsjob_infra.settings import PipelineSettings

# Execution input field -> the job's override variable. A missing field becomes "",
# which the job treats as "not set" (the SSM parameter applies).
# The hollow-prefix check reads one page of this many keys: each listed object is up
# to ~1.3 KB of JSON (a key is at most 1,024 bytes, S3 User Guide, "Naming objects"),
# so the page stays well inside the 256 KiB state payload (Step Functions quotas).
HOLLOW_CHECK_KEYS = 100

INPUT_OVERRIDES = {
    "outputPrefix": "DSJOB_OUTPUT_PREFIX",
    "outputFormat": "DSJOB_OUTPUT_FORMAT",
    "dataset": "DSJOB_DATASET",
    "modelKey": "DSJOB_MODEL_KEY",
    "scriptKey": "DSJOB_SCRIPT_KEY",
    "packageKey": "DSJOB_PACKAGE_KEY",
    "transformKey": "DSJOB_TRANSFORM_KEY",
}


def machine_name(environment: str) -> str:
    """The state machine's fixed name (IAM statements name its executions without a Ref)."""
    return f"ds-preprocessing-{environment}"


class JobWorkflow(Construct):
    """The state machine, its log group, and the job blocks it runs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings,
        compute: JobCompute | JobFunction,
        input_bucket: s3.IBucket,
        output_bucket: s3.IBucket,
    ) -> None:
        """Args: where the job runs (ECS task or function), the bucket a fan-out lists, outputs."""
        super().__init__(scope, construct_id)
        self._settings = settings
        self._input_bucket = input_bucket
        self._output_bucket = output_bucket
        self._blocks: JobBlock | LambdaJobBlock
        if isinstance(compute, JobFunction):
            self._blocks = LambdaJobBlock(self, settings, compute)
        else:
            self._blocks = JobBlock(self, settings, compute, output_bucket)
        self.failed = sfn.Fail(
            self, "Job failed", error_path="$.error.Error", cause_path="$.error.Cause"
        )
        succeeded = sfn.Succeed(self, "Succeeded")
        defaults = sfn.Pass(
            self,
            "Defaults",
            parameters={
                "defaults": {
                    "inputKey": "",
                    "inputPrefix": "",
                    "scheduledTime": "",
                    "partitions": settings.partitions,
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
        single = self._blocks.build("", self._environment("single", "$.job.inputKey"))
        single.add_catch(self.failed, result_path="$.error")
        on_lambda = isinstance(compute, JobFunction)
        fan_out = self._no_fan_out() if on_lambda else self._fan_out(succeeded)
        route = (
            sfn.Choice(self, "Fan out?")
            .when(
                sfn.Condition.not_(sfn.Condition.string_equals("$.job.inputPrefix", "")),
                fan_out,
            )
            .otherwise(single.next(succeeded))
        )
        definition = defaults.next(merge).next(self._run_identity(route))
        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            log_group_name=f"/aws/vendedlogs/states/ds-preprocessing-{settings.environment}",
            retention=retention(settings.log_retention_days),
        )
        skip_checkov(self.log_group, "CKV_AWS_158", LOGS_KMS_REASON)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=machine_name(settings.environment),
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            state_machine_type=sfn.StateMachineType.STANDARD,
            # The execution fails with States.Timeout (and the running task is stopped).
            timeout=Duration.hours(settings.execution_timeout_hours),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        if isinstance(compute, JobCompute):
            self.grant_run_task(compute)

    def _environment(
        self, phase: str, input_key: str | None = None, **extra: str
    ) -> dict[str, str]:
        """The container overrides of one phase (contracts.md, fan-out task contract)."""
        environment = {
            "DSJOB_PHASE": phase,
            "DSJOB_RUN_ID": "$.run.id",
            "DSJOB_SCHEDULED_TIME": "$.job.scheduledTime",
        }
        if input_key is not None:
            environment["DSJOB_INPUT_KEY"] = input_key
        environment.update(extra)
        environment.update({v: f"$.job.{field}" for field, v in INPUT_OVERRIDES.items()})
        return environment

    def _run_identity(self, then: sfn.IChainable) -> sfn.IChainable:
        """``$.run``: the run id, the status object's key, P as a string (ECS wants strings)."""
        # EventBridge Scheduler's <aws.scheduler.scheduled-time> is ISO 8601 in UTC
        # (2027-01-15T09:00:00Z): its first two '-' fields are the year and the month.
        parts = sfn.JsonPath.string_split(sfn.JsonPath.string_at("$.job.scheduledTime"), "-")
        scheduled = sfn.Pass(
            self,
            "Scheduled run id",
            parameters={
                "id": sfn.JsonPath.format(
                    "monthly-{}-{}",
                    sfn.JsonPath.array_get_item(parts, 0),
                    sfn.JsonPath.array_get_item(parts, 1),
                )
            },
            result_path="$.run",
        )
        manual = sfn.Pass(
            self,
            "Manual run id",
            parameters={"id": sfn.JsonPath.execution_name},
            result_path="$.run",
        )

        run_id = sfn.JsonPath.string_at("$.run.id")

        def status(name: str, key: str, tasks: str) -> sfn.Pass:
            return sfn.Pass(
                self,
                name,
                parameters={
                    "id": run_id,
                    "statusKey": key,
                    "taskStatusPrefix": tasks,
                    "partitions": sfn.JsonPath.format(
                        "{}", sfn.JsonPath.string_at("$.job.partitions")
                    ),
                },
                result_path="$.run",
            )

        # The synth-time prefix is the SSM output-prefix parameter this stack writes.
        # A single run's status object, and the folder of a fan-out's per-task ones
        # (dsjob's status.status_key: <prefix>status/<run-id>/<task>.json).
        default_prefix = status(
            "Status key (parameter prefix)",
            sfn.JsonPath.format(f"{self._settings.output_prefix}status/{{}}.json", run_id),
            sfn.JsonPath.format(f"{self._settings.output_prefix}status/{{}}/", run_id),
        )
        given = sfn.JsonPath.string_at("$.job.outputPrefix")
        given_prefix = status(
            "Status key (input prefix)",
            sfn.JsonPath.format("{}status/{}.json", given, run_id),
            sfn.JsonPath.format("{}status/{}/", given, run_id),
        )
        default_prefix.next(then)
        given_prefix.next(then)
        prefix = (
            sfn.Choice(self, "Output prefix given?")
            .when(sfn.Condition.string_equals("$.job.outputPrefix", ""), default_prefix)
            .otherwise(given_prefix)
        )
        scheduled.next(prefix)
        manual.next(prefix)
        return (
            sfn.Choice(self, "Scheduled?")
            .when(sfn.Condition.string_equals("$.job.scheduledTime", ""), manual)
            .otherwise(scheduled)
        )

    def _no_fan_out(self) -> sfn.Fail:
        """With compute: lambda an inputPrefix is refused: fan-out runs on Fargate only.

        Each map, reduce and commit task would be an invocation bounded by 15 minutes and
        10 GiB of /tmp, and a reduce reads a whole partition of the run: the fan-out is for
        inputs too big for that, so this environment refuses it instead of failing midway.
        """
        return sfn.Fail(
            self,
            "Fan-out needs Fargate",
            error="Dsjob.Config",
            cause=(
                "inputPrefix (fan-out) runs on compute: fargate only; this environment is "
                "deployed with compute: lambda. Pass inputKey for one run, or deploy with "
                "-c compute=fargate"
            ),
        )

    def _fan_out(self, succeeded: sfn.Succeed) -> sfn.IChainable:
        """Map (one task per data object) → reduce (one per partition) → commit."""
        listing = tasks.CallAwsService(
            self,
            "List input prefix",
            service="s3",
            action="listObjectsV2",
            iam_action="s3:ListBucket",
            iam_resources=[self._input_bucket.bucket_arn],
            parameters={
                "Bucket": self._input_bucket.bucket_name,
                "Prefix": sfn.JsonPath.string_at("$.job.inputPrefix"),
                "MaxKeys": 1,
            },
            result_selector={"count": sfn.JsonPath.number_at("$.KeyCount")},
            result_path="$.listing",
        )
        listing.add_catch(self.failed, result_path="$.error")
        empty = sfn.Fail(
            self,
            "Empty input prefix",
            error="Dsjob.EmptyInput",
            cause_path=sfn.JsonPath.format(
                f"no input objects under s3://{self._input_bucket.bucket_name}/{{}}: "
                "nothing to fan out over",
                sfn.JsonPath.string_at("$.job.inputPrefix"),
            ),
        )
        # A prefix can hold objects and still no data: a folder marker ("prefix/", 0 bytes),
        # empty objects and hidden names (_SUCCESS), which the map skips. Its first page is
        # read again (Contents exists once KeyCount > 0; the sizes above 0 kept by a filter
        # path, Step Functions Developer Guide, "Paths") and run through the map's rule.
        # Only a page that is the whole listing can prove there is no data.
        data = tasks.CallAwsService(
            self,
            "List data objects",
            service="s3",
            action="listObjectsV2",
            iam_action="s3:ListBucket",
            iam_resources=[self._input_bucket.bucket_arn],
            parameters={
                "Bucket": self._input_bucket.bucket_name,
                "Prefix": sfn.JsonPath.string_at("$.job.inputPrefix"),
                "MaxKeys": HOLLOW_CHECK_KEYS,
            },
            result_selector={
                "objects": sfn.JsonPath.list_at("$.Contents[?(@.Size > 0)]"),
                "truncated": sfn.JsonPath.string_at("$.IsTruncated"),
            },
            result_path="$.data",
        )
        data.add_catch(self.failed, result_path="$.error")
        # Each listed object goes through the map's own "Data file?" rule (one builder,
        # _data_file), answering 1 for data and 0 otherwise; any 1 means data.
        verdicts = sfn.Map(
            self,
            "Classify listed objects",
            items_path="$.data.objects",
            item_selector={
                "key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
                "size": sfn.JsonPath.number_at("$$.Map.Item.Value.Size"),
            },
            result_path="$.data.verdicts",
        )
        verdicts.item_processor(
            self._data_file(
                "Listed ",
                sfn.Pass(self, "Listed data file", result=sfn.Result.from_number(1)),
                sfn.Pass(self, "Listed other object", result=sfn.Result.from_number(0)),
            )
        )
        any_verdict = sfn.Pass(
            self,
            "Any data verdict",
            parameters={
                "any": sfn.JsonPath.array_contains(sfn.JsonPath.list_at("$.data.verdicts"), 1)
            },
            result_path="$.data.found",
        )
        hollow = sfn.Fail(
            self,
            "Hollow input prefix",
            error="Dsjob.EmptyInput",
            cause_path=sfn.JsonPath.format(
                f"no data objects under s3://{self._input_bucket.bucket_name}/{{}}: only "
                "empty objects, folder markers or hidden names (_SUCCESS, .crc), "
                "nothing to fan out over",
                sfn.JsonPath.string_at("$.job.inputPrefix"),
            ),
        )
        map_objects = self._map_objects()
        partitions = sfn.Pass(
            self,
            "Partition numbers",
            parameters={
                "numbers": sfn.JsonPath.array_range(
                    0,
                    Token.as_number(
                        sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.job.partitions"), -1)
                    ),
                    1,
                )
            },
            result_path="$.partitions",
        )
        reduce = sfn.Map(
            self,
            "Reduce partitions",
            items_path="$.partitions.numbers",
            item_selector={
                "job": sfn.JsonPath.object_at("$.job"),
                "run": sfn.JsonPath.object_at("$.run"),
                "partition": sfn.JsonPath.format("{}", sfn.JsonPath.string_at("$$.Map.Item.Value")),
            },
            max_concurrency=self._settings.max_concurrency,
            result_path=sfn.JsonPath.DISCARD,
        )
        reduce.item_processor(
            self._blocks.build(
                "Reduce ",
                self._environment(
                    "reduce", DSJOB_PARTITION="$.partition", DSJOB_PARTITIONS="$.run.partitions"
                ),
                self._task_status("reduce-{}.json", "$.partition"),
            )
        )
        # An inline Map fails with the failing iteration's own error and cause.
        reduce.add_catch(self.failed, result_path="$.error")
        commit = self._blocks.build(
            "Commit ",
            self._environment("commit", DSJOB_PARTITIONS="$.run.partitions"),
            self._task_status("commit.json"),
        )
        commit.add_catch(self.failed, result_path="$.error")
        map_objects.next(partitions).next(reduce).next(commit).next(succeeded)
        any_data = (
            sfn.Choice(self, "Any data objects?")
            .when(sfn.Condition.boolean_equals("$.data.found.any", value=True), map_objects)
            .when(sfn.Condition.boolean_equals("$.data.truncated", value=True), map_objects)
            .otherwise(hollow)
        )
        return listing.next(
            sfn.Choice(self, "Any input objects?")
            .when(sfn.Condition.number_equals("$.listing.count", 0), empty)
            .otherwise(data.next(verdicts).next(any_verdict).next(any_data))
        )

    def _map_objects(self) -> sfn.DistributedMap:
        map_objects = sfn.DistributedMap(
            self,
            "Map objects",
            item_reader=sfn.S3ObjectsItemReader(
                bucket=self._input_bucket, prefix=sfn.JsonPath.string_at("$.job.inputPrefix")
            ),
            # ListObjectsV2 items carry Key and Size (Step Functions, "ItemReader").
            item_selector={
                "job": sfn.JsonPath.object_at("$.job"),
                "run": sfn.JsonPath.object_at("$.run"),
                "key": sfn.JsonPath.string_at("$$.Map.Item.Value.Key"),
                "size": sfn.JsonPath.number_at("$$.Map.Item.Value.Size"),
            },
            max_concurrency=self._settings.max_concurrency,
            tolerated_failure_percentage=0,
            map_execution_type=sfn.StateMachineType.STANDARD,
            # Child results go to S3, not into the 256 KiB state payload.
            result_writer_v2=sfn.ResultWriterV2(
                bucket=self._output_bucket, prefix=MAP_RESULTS_PREFIX
            ),
            result_path="$.mapRun",
        )
        map_objects.item_processor(
            self._data_file(
                "",
                self._blocks.build(
                    "Map ",
                    self._environment("map", "$.key", DSJOB_PARTITIONS="$.run.partitions"),
                    self._task_status("map/{}.json", "$.key"),
                ),
                sfn.Pass(self, "Skip empty, folder marker or hidden name"),
            )
        )
        map_objects.add_catch(self._failed_shard(), result_path="$.error")
        return map_objects

    def _data_file(self, label: str, data: sfn.IChainable, other: sfn.IChainable) -> sfn.IChainable:
        """``{key, size}`` → `data` or `other`, by dsjob.dataobjects' rule (same constants).

        The last path segment comes from intrinsics (States.StringSplit on "/", the item
        at States.ArrayLength - 1; Step Functions Developer Guide, "Intrinsic functions").
        """
        split = sfn.JsonPath.string_split(sfn.JsonPath.string_at("$.key"), "/")
        last = Token.as_number(
            sfn.JsonPath.math_add(Token.as_number(sfn.JsonPath.array_length(split)), -1)
        )
        name = sfn.Pass(
            self,
            f"{label}Object name",
            parameters={"name": sfn.JsonPath.array_get_item(split, last)},
            result_path="$.object",
        )
        hidden = [
            sfn.Condition.string_matches("$.object.name", f"{start}*")
            for start in HIDDEN_NAME_STARTS
        ]
        # A folder marker is checked on the key first: its split has no empty last item.
        not_data = sfn.Condition.or_(
            sfn.Condition.string_matches("$.key", "*/"),
            sfn.Condition.number_equals("$.size", 0),
            *hidden,
        )
        return name.next(
            sfn.Choice(self, f"{label}Data file?").when(not_data, other).otherwise(data)
        )

    @staticmethod
    def _task_status(name: str, *paths: str) -> str:
        """A fan-out task's status key: ``$.run.taskStatusPrefix`` + `name` filled from `paths`."""
        values = [sfn.JsonPath.string_at(path) for path in paths]
        return sfn.JsonPath.format(
            "{}" + name, sfn.JsonPath.string_at("$.run.taskStatusPrefix"), *values
        )

    def _failed_shard(self) -> sfn.IChainable:
        """The first failed child execution's error and cause, else the map's own error."""
        stack = Stack.of(self)
        name = machine_name(self._settings.environment)
        base = f"arn:{stack.partition}:states:{stack.region}:{stack.account}"

        def call(
            construct_id: str,
            action: str,
            iam: str,
            resource: str,
            **kw: Any,  # noqa: ANN401 - CallAwsService's own keyword arguments
        ) -> tasks.CallAwsService:
            state = tasks.CallAwsService(
                self,
                construct_id,
                service="sfn",
                action=action,
                iam_action=f"states:{iam}",
                iam_resources=[resource],
                **kw,
            )
            # Any failure of the look-up keeps the map's own error in $.error.
            state.add_catch(self.failed, result_path="$.lookupError")
            return state

        map_runs = call(
            "Find map run",
            "listMapRuns",
            "ListMapRuns",
            f"{base}:execution:{name}:*",
            parameters={"ExecutionArn": sfn.JsonPath.string_at("$$.Execution.Id")},
            result_selector={"arn": sfn.JsonPath.string_at("$.MapRuns[0].MapRunArn")},
            result_path="$.shard",
        )
        failed = call(
            "Find failed shard",
            "listExecutions",
            "ListExecutions",
            f"{base}:mapRun:{name}/*",
            parameters={
                "MapRunArn": sfn.JsonPath.string_at("$.shard.arn"),
                "StatusFilter": "FAILED",
                "MaxResults": 1,
            },
            result_selector={"arn": sfn.JsonPath.string_at("$.Executions[0].ExecutionArn")},
            result_path="$.shard",
        )
        describe = call(
            "Describe failed shard",
            "describeExecution",
            "DescribeExecution",
            f"{base}:execution:{name}/*",
            parameters={"ExecutionArn": sfn.JsonPath.string_at("$.shard.arn")},
            result_selector={
                "Error": sfn.JsonPath.string_at("$.Error"),
                "Cause": sfn.JsonPath.string_at("$.Cause"),
            },
            result_path="$.error",
        )
        return map_runs.next(failed).next(describe).next(self.failed)

    def grant_run_task(self, compute: JobCompute) -> None:
        """What RunTask.sync needs, each scoped to this stack (the state is written out by hand).

        Step Functions Developer Guide, "IAM policies for Amazon ECS/Fargate" (.sync):
        RunTask, StopTask, DescribeTasks, the managed EventBridge rule, and PassRole; ECS
        Developer Guide, "Tagging your resources": tagging at launch needs ecs:TagResource.
        """
        stack = Stack.of(self)
        role = self.state_machine.role
        cluster_arn = compute.cluster.cluster_arn
        family = compute.task_definition.family
        # The cluster's fixed name, not its Ref: ARNs of its tasks are task/<cluster>/<id>.
        tasks_arn = stack.format_arn(
            service="ecs",
            resource="task",
            resource_name=f"{compute.cluster_name}/*",
        )
        on_cluster = {"ArnEquals": {"ecs:cluster": cluster_arn}}
        statements = [
            iam.PolicyStatement(
                sid="RunJobTask",
                actions=["ecs:RunTask"],
                resources=[
                    stack.format_arn(
                        service="ecs", resource="task-definition", resource_name=f"{family}:*"
                    )
                ],
                conditions=on_cluster,
            ),
            iam.PolicyStatement(
                sid="WatchAndStopJobTasks",
                actions=["ecs:StopTask", "ecs:DescribeTasks"],
                resources=[tasks_arn],
                conditions=on_cluster,
            ),
            iam.PolicyStatement(
                sid="TagJobTasksAtLaunch",
                actions=["ecs:TagResource"],
                resources=[tasks_arn],
                conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}},
            ),
            iam.PolicyStatement(
                sid="PassJobRoles",
                actions=["iam:PassRole"],
                resources=[compute.task_role.role_arn, compute.execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            ),
            iam.PolicyStatement(
                sid="SyncEventRule",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForECSTaskRule",
                    )
                ],
            ),
        ]
        for statement in statements:
            role.add_to_principal_policy(statement)
