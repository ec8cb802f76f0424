"""One stack per environment: ds-preprocessing-<env>-<account>-<region>."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from aws_cdk import App, CfnOutput, Environment, Fn, Stack, Tags, Validations
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_ssm as ssm
from cdk_nag import AwsSolutionsChecks

from dsjob_infra.compute import JobCompute
from dsjob_infra.nag import acknowledge
from dsjob_infra.settings import PipelineSettings
from dsjob_infra.storage import JobBuckets
from dsjob_infra.workflow import JobWorkflow

if TYPE_CHECKING:
    from constructs import Construct

# Synth needs no AWS account: without credentials (no CDK_DEFAULT_ACCOUNT) the
# stack is named for this placeholder, which `cdk deploy` would refuse to use.
PLACEHOLDER_ACCOUNT = "000000000000"
PLACEHOLDER_REGION = "us-east-1"
# Feature flags this app relies on, set here so `python infra/app.py` and the CLI agree.
FEATURE_FLAGS = {
    # Grant S3 log delivery through the bucket policy instead of an ACL.
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    # Grant ecs:RunTask on this task definition revision only, not the whole family.
    "@aws-cdk/aws-stepfunctions-tasks:fixRunEcsTaskPolicy": True,
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
        env = settings.environment

        def name(purpose: str) -> str:
            return f"ds-{purpose}-{env}-{self.account}-{self.region}"

        Tags.of(self).add("project", "dsjob")
        Tags.of(self).add("environment", env)
        self.buckets = JobBuckets(self, "Buckets", name=name)
        self.compute = JobCompute(
            self,
            "Compute",
            settings=settings,
            input_bucket=self.buckets.input,
            output_bucket=self.buckets.output,
            artifact_bucket=self.buckets.artifacts,
        )
        self.workflow = JobWorkflow(
            self,
            "Workflow",
            settings=settings,
            cluster=self.compute.cluster,
            task_definition=self.compute.task_definition,
            container=self.compute.container,
            security_group=self.compute.security_group,
            job_log_group=self.compute.log_group,
            input_bucket=self.buckets.input,
        )
        self.parameters = self._parameters()
        self.schedule = scheduler.Schedule(
            self,
            "MonthlyRun",
            schedule_name=f"ds-preprocessing-{env}-monthly",
            description="The scheduled run of the ds-preprocessing job",
            schedule=scheduler.ScheduleExpression.expression(settings.schedule),
            enabled=settings.schedule_enabled,
            target=targets.StepFunctionsStartExecution(
                self.workflow.state_machine,
                input=scheduler.ScheduleTargetInput.from_object({}),
            ),
        )
        self._acknowledge_generated_policies()
        for output_id, value in {
            "InputBucket": self.buckets.input.bucket_name,
            "OutputBucket": self.buckets.output.bucket_name,
            "ArtifactBucket": self.buckets.artifacts.bucket_name,
            "RepositoryUri": self.compute.repository.repository_uri,
            "StateMachineArn": self.workflow.state_machine.state_machine_arn,
            "JobLogGroup": self.compute.log_group.log_group_name,
        }.items():
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

    def _acknowledge_generated_policies(self) -> None:
        """Findings on policies CDK writes for us; each one is scoped as tightly as AWS allows."""
        workflow_policy = self.workflow.state_machine.role.node.find_child("DefaultPolicy")
        execution_policy = self.compute.execution_role.node.find_child("DefaultPolicy")
        machine = self.workflow.state_machine
        map_policy = machine.node.find_child("DistributedMapPolicy")
        machine_id = self.get_logical_id(machine.node.default_child)  # type: ignore[arg-type]
        machine_name = f'{{"Fn::Select":[6,{{"Fn::Split":[":",{{"Ref":"{machine_id}"}}]}}]}}'
        executions = (
            f"arn:<AWS::Partition>:states:{self.region}:{self.account}:execution:{machine_name}"
        )
        log_group_id = self.get_logical_id(self.compute.log_group.node.default_child)  # type: ignore[arg-type]
        acknowledgements = [
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
    stack = PipelineStack(
        app,
        f"DsPreprocessing-{settings.environment}",
        settings=settings,
        env=env,
        stack_name=f"ds-preprocessing-{settings.environment}-{env.account}-{env.region}",
        description=f"dsjob: the scheduled ds-preprocessing pipeline ({settings.environment})",
        termination_protection=settings.environment == "prod",
    )
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack
