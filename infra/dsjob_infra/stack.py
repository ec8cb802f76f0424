"""One stack per environment: ds-preprocessing-<env>-<account>-<region>."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from aws_cdk import App, CfnOutput, Duration, Environment, Fn, Stack, Tags, Validations
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_ssm as ssm
from cdk_nag import AwsSolutionsChecks

from dsjob_infra.alarms import FailureAlarms
from dsjob_infra.compute import JobCompute
from dsjob_infra.function import JobFunction
from dsjob_infra.nag import acknowledge
from dsjob_infra.repository import RepositoryStack
from dsjob_infra.settings import PipelineSettings, stack_name
from dsjob_infra.storage import JobBuckets
from dsjob_infra.workflow import JobWorkflow
from dsjob_infra.workflow import machine_name as state_machine_name

if TYPE_CHECKING:
    from constructs import Construct

# Synth needs no AWS account: without credentials (no CDK_DEFAULT_ACCOUNT) the
# stack is named for this placeholder, which `cdk deploy` would refuse to use.
PLACEHOLDER_ACCOUNT = "000000000000"
PLACEHOLDER_REGION = "us-east-1"
SCHEDULE_RETRIES = 10
SCHEDULE_MAX_EVENT_AGE_HOURS = 6
# Feature flags this app relies on, set here so `python infra/app.py` and the CLI agree.
FEATURE_FLAGS = {
    # Grant S3 log delivery through the bucket policy instead of an ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # Grant ecs:RunTask on this task definition revision only, not the whole family.
    "@aws-cdk/aws-stepfunctions-tasks:fixRunEcsTaskPolicy": True,
    # Render the distributed map's ResultWriter from ResultWriterV2 (ResultWriter is
    # deprecated in aws-cdk-lib 2.x); without the flag CDK drops result_writer_v2.
    "@aws-cdk/aws-stepfunctions:useDistributedMapResultWriterV2": True,
}


class PipelineStack(Stack):
    """Buckets, image repository, ECS job, workflow, schedule and the job's SSM parameters."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings,
        **kwargs: Any,  # noqa: ANN401 - passed through to Stack unchanged
    ) -> None:
        """Args: settings: the deployment's settings; kwargs: Stack props (env, stack_name)."""
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.repository_stack: RepositoryStack | None = None
        env = settings.environment

        def name(purpose: str) -> str:
            return f"ds-{purpose}-{env}-{self.account}-{self.region}"

        Tags.of(self).add("project", "dsjob")
        Tags.of(self).add("environment", env)
        self.buckets = JobBuckets(
            self, "Buckets", name=name, noncurrent_days=settings.noncurrent_days
        )
        # compute: fargate (an ECS task in a small VPC) or lambda (the `lambda` image).
        compute_type = JobFunction if settings.compute == "lambda" else JobCompute
        self.compute: JobCompute | JobFunction = compute_type(
            self,
            "Function" if settings.compute == "lambda" else "Compute",
            settings=settings,
            input_bucket=self.buckets.input,
            output_bucket=self.buckets.output,
            artifact_bucket=self.buckets.artifacts,
        )
        self.workflow = JobWorkflow(
            self,
            "Workflow",
            settings=settings,
            compute=self.compute,
            input_bucket=self.buckets.input,
            output_bucket=self.buckets.output,
        )
        self.parameters = self._parameters()
        self.alarms = FailureAlarms(
            self, "Alarms", settings=settings, state_machine=self.workflow.state_machine
        )
        self.schedule_dlq = self.alarms.dead_letter_queue("ScheduleDeadLetters")
        self.schedule = scheduler.Schedule(
            self,
            "MonthlyRun",
            schedule_name=f"ds-preprocessing-{env}-monthly",
            description="The scheduled run of the ds-preprocessing job",
            schedule=scheduler.ScheduleExpression.expression(settings.schedule),
            enabled=settings.schedule_enabled,
            target=targets.StepFunctionsStartExecution(
                self.workflow.state_machine,
                # EventBridge Scheduler User Guide, "Adding context attributes": the tick's
                # time, so the run id (monthly-YYYY-MM) is the same for a repeated delivery.
                input=scheduler.ScheduleTargetInput.from_object(
                    {"scheduledTime": scheduler.ContextAttribute.scheduled_time}
                ),
                # A start that keeps failing (throttled, stack half-deleted) lands in the
                # dead-letter queue, whose depth alarms the failure topic.
                dead_letter_queue=self.schedule_dlq,
                retry_attempts=SCHEDULE_RETRIES,
                max_event_age=Duration.hours(SCHEDULE_MAX_EVENT_AGE_HOURS),
            ),
        )
        if isinstance(self.compute, JobCompute):
            self._acknowledge_generated_policies(self.compute)
        else:
            self._acknowledge_function_invoke(self.compute)
        outputs = {
            "InputBucket": self.buckets.input.bucket_name,
            "OutputBucket": self.buckets.output.bucket_name,
            "ArtifactBucket": self.buckets.artifacts.bucket_name,
            "RepositoryUri": self.compute.repository.repository_uri,
            "StateMachineArn": self.workflow.state_machine.state_machine_arn,
            "JobLogGroup": self.compute.log_group.log_group_name,
            "FailureTopicArn": self.alarms.topic.topic_arn,
            "ImagePlatform": settings.image_platform,
            "JobCompute": settings.compute,
        }
        if isinstance(self.compute, JobFunction):
            outputs["FunctionName"] = self.compute.function.function_name
        for output_id, value in outputs.items():
            CfnOutput(self, output_id, value=value)

    @property
    def availability_zones(self) -> list[str]:
        """Two AZs resolved at deploy time, so synth needs no account lookup (cdk.context.json)."""
        return [Fn.select(index, Fn.get_azs()) for index in range(2)]

    def _parameters(self) -> dict[str, ssm.StringParameter]:
        prefix = self.settings.param_prefix
        values = {
            "input-bucket": self.buckets.input.bucket_name,
            "output-bucket": self.buckets.output.bucket_name,
            "artifact-bucket": self.buckets.artifacts.bucket_name,
            "input-key": self.settings.input_key,
            "output-prefix": self.settings.output_prefix,
        }
        return {
            key: ssm.StringParameter(
                self,
                f"Param-{key}",
                parameter_name=f"{prefix}/{key}",
                string_value=value,
                description=f"dsjob {key} ({self.settings.environment})",
            )
            for key, value in values.items()
        }

    def _acknowledge_function_invoke(self, compute: JobFunction) -> None:
        """LambdaInvoke's grant: InvokeFunction on the function and its versions (``:*``)."""
        workflow_policy = self.workflow.state_machine.role.node.find_child("DefaultPolicy")
        function_id = self.get_logical_id(compute.function.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            workflow_policy,
            f"AwsSolutions-IAM5[Resource::<{function_id}.Arn>:*]",
            "CDK's LambdaInvoke grant also names the function's versions and aliases; it "
            "stays on this one function.",
        )
        acknowledge(
            workflow_policy,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing and CloudWatch Logs delivery APIs take no resource ARNs.",
        )

    def _acknowledge_generated_policies(self, compute: JobCompute) -> None:
        """Findings on policies CDK writes for us; each one is scoped as tightly as AWS allows."""
        workflow_policy = self.workflow.state_machine.role.node.find_child("DefaultPolicy")
        execution_policy = compute.execution_role.node.find_child("DefaultPolicy")
        machine = self.workflow.state_machine
        map_policy = machine.node.find_child("DistributedMapPolicy")
        machine_id = self.get_logical_id(machine.node.default_child)  # type: ignore[arg-type]
        machine_name = f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{machine_id}"}}]}}]}}'
        executions = (
            f"arn:<AWS::Partition>:states:{self.region}:{self.account}:execution:{machine_name}"
        )
        log_group_id = self.get_logical_id(compute.log_group.node.default_child)  # type: ignore[arg-type]
        output_id = self.get_logical_id(self.buckets.output.node.default_child)  # type: ignore[arg-type]
        env = self.settings.environment
        arn = f"arn:<AWS::Partition>:{{}}:{self.region}:{self.account}:{{}}"
        scoped = [
            (
                arn.format("ecs", f"task-definition/ds-preprocessing-{env}:*"),
                "RunTask names the family; each deploy registers a new revision of it.",
            ),
            (
                arn.format("ecs", f"task/ds-preprocessing-{env}/*"),
                "Task ids are made at run time; the wildcard stays inside this stack's cluster.",
            ),
            (
                arn.format("states", f"execution:{state_machine_name(env)}:*"),
                "ListMapRuns on this state machine's executions, named at run time.",
            ),
            (
                arn.format("states", f"mapRun:{state_machine_name(env)}/*"),
                "ListExecutions of this state machine's map runs, named at run time.",
            ),
            (
                arn.format("states", f"execution:{state_machine_name(env)}/*"),
                "DescribeExecution of this state machine's map children, named at run time.",
            ),
            (
                f"arn:<AWS::Partition>:s3:::<{output_id}>/*",
                (
                    "CDK's grant for the distributed map's ResultWriter, which writes its "
                    "result files under _map-results/ of the output bucket, covers its objects."
                ),
            ),
            (
                f"<{output_id}.Arn>/*status/*",
                "Status objects are <prefix>status/<run-id>.json; the prefix may be set per run.",
            ),
        ]
        acknowledgements = [
            *(
                (workflow_policy, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
                for resource, reason in scoped
            ),
            (
                execution_policy,
                "AwsSolutions-IAM5[Resource::*]",
                (
                    "ecr:GetAuthorizationToken has no resource-level permissions; "
                    "image pulls themselves are limited to this repository."
                ),
            ),
            (
                workflow_policy,
                "AwsSolutions-IAM5[Resource::*]",
                "X-Ray tracing and CloudWatch Logs delivery APIs take no resource ARNs.",
            ),
            (
                workflow_policy,
                f"AwsSolutions-IAM5[Resource::<{log_group_id}.Arn>:*]",
                (
                    "Reading the status line needs the job's log streams, named per task at run "
                    "time; the wildcard stays inside the job's one log group."
                ),
            ),
            *(
                (
                    map_policy,
                    f"AwsSolutions-IAM5[Resource::{executions}{suffix}]",
                    (
                        "The distributed map starts and stops child executions of this state "
                        "machine only; their names are generated at run time."
                    ),
                )
                for suffix in (":*", "/*:*")
            ),
        ]
        for construct, rule, reason in acknowledgements:
            acknowledge(construct, rule, reason)


def resolve_environment() -> Environment:
    """The account and region to synthesize for: the CLI's, else placeholders."""
    account = os.environ.get("CDK_DEFAULT_ACCOUNT") or PLACEHOLDER_ACCOUNT
    region = os.environ.get("CDK_DEFAULT_REGION") or PLACEHOLDER_REGION
    return Environment(account=account, region=region)


def build_app(
    context: dict[str, Any] | None = None, outdir: str | None = None, *, nag: bool = True
) -> tuple[App, PipelineStack]:
    """The CDK app with its one stack, checked by cdk-nag's AwsSolutions pack on synth.

    Args:
        context: CDK context (``environment`` is required); the CLI's ``-c`` values
            arrive through CDK_CONTEXT_JSON when this is None.
        outdir: where to write the cloud assembly (the CLI passes CDK_OUTDIR).
        nag: register cdk-nag as a policy validation plugin (synth fails on findings).
    """
    app = App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    settings = PipelineSettings.from_context(app.node.try_get_context)
    env = resolve_environment()
    if env.account == PLACEHOLDER_ACCOUNT:
        print(  # noqa: T201 - synth-time notice, the CDK way
            f"note: no AWS account in the environment; synthesizing for {PLACEHOLDER_ACCOUNT}",
            file=sys.stderr,
        )
    account, region = str(env.account), str(env.region)
    repository = RepositoryStack(
        app,
        f"DsPreprocessingRepository-{settings.environment}",
        settings=settings,
        env=env,
        stack_name=stack_name(settings.environment, account, region, "repository"),
        description=f"dsjob: the ds-preprocessing image repository ({settings.environment})",
        termination_protection=settings.environment == "prod",
    )
    stack = PipelineStack(
        app,
        f"DsPreprocessing-{settings.environment}",
        settings=settings,
        env=env,
        stack_name=stack_name(settings.environment, account, region),
        description=f"dsjob: the scheduled ds-preprocessing pipeline ({settings.environment})",
        termination_protection=settings.environment == "prod",
    )
    # Deploying the pipeline deploys the repository first; no value crosses stacks.
    stack.add_stack_dependency(repository)
    stack.repository_stack = repository
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack
