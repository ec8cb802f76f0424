"""Where the job runs with ``compute: lambda``: the `lambda` image as a Lambda function.

The function runs the image `make ml-push COMPUTE=lambda` pushed to the environment's
repository (the `lambda` target of docker/Dockerfile, tag ``<version>-<sha>-lambda``),
pinned by digest like the Fargate task. Its role holds the Fargate task role's
statements and nothing more (grants.py), plus writing its own log group.

Not in a VPC: the task's VPC has public subnets and no NAT, and a function in a VPC gets
no public address (Lambda Developer Guide, "Giving Lambda functions access to resources
in an Amazon VPC"), so reaching SSM and STS would need interface endpoints that cost
more per month than this monthly job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from dsjob_infra.compute import LOGS_KMS_REASON, retention
from dsjob_infra.grants import grant_job
from dsjob_infra.nag import acknowledge, skip_checkov

if TYPE_CHECKING:
    from aws_cdk import aws_s3 as s3

    from dsjob_infra.settings import PipelineSettings

ARCHITECTURES = {"X86_64": lambda_.Architecture.X86_64, "ARM64": lambda_.Architecture.ARM_64}


def function_name(environment: str) -> str:
    """The function's fixed name (the repository policy and IAM name it without a Ref)."""
    return f"ds-preprocessing-{environment}"


class JobFunction(Construct):
    """The repository reference, the function, its role and its log group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: PipelineSettings,
        input_bucket: s3.IBucket,
        output_bucket: s3.IBucket,
        artifact_bucket: s3.IBucket,
    ) -> None:
        """Args: the three buckets the function's role is scoped to."""
        super().__init__(scope, construct_id)
        env = settings.environment
        name = function_name(env)
        self.repository = ecr.Repository.from_repository_name(
            self, "Repository", settings.repository_name
        )
        self.log_group = logs.LogGroup(
            self,
            "JobLogs",
            log_group_name=f"/aws/lambda/{name}",
            retention=retention(settings.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if env == "prod" else RemovalPolicy.DESTROY,
        )
        skip_checkov(self.log_group, "CKV_AWS_158", LOGS_KMS_REASON)
        self.role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="The job on Lambda: reads its parameters, input, artifacts; writes outputs",
        )
        grant_job(self.role, settings, input_bucket, output_bucket, artifact_bucket)
        # What AWSLambdaBasicExecutionRole grants, limited to the function's one log group.
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteFunctionLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{self.log_group.log_group_arn}:*"],
            )
        )
        reserved = settings.lambda_reserved_concurrency or None
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            function_name=name,
            description=f"dsjob: the ds-preprocessing job ({env}), dsjob.lambda_handler",
            # A digest (sha256:...) pins the exact image ml-push pushed, as on Fargate.
            code=lambda_.DockerImageCode.from_ecr(
                self.repository, tag_or_digest=settings.image_digest or settings.image_tag
            ),
            architecture=ARCHITECTURES[settings.cpu_architecture],
            memory_size=settings.lambda_memory_mib,
            ephemeral_storage_size=Size.mebibytes(settings.lambda_ephemeral_storage_mib),
            timeout=Duration.minutes(settings.lambda_timeout_minutes),
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved,
            environment={"DSJOB_PARAM_PREFIX": settings.param_prefix},
        )
        self._accept_findings(reserved)

    def _accept_findings(self, reserved: int | None) -> None:
        acknowledge(
            self.role,
            f"AwsSolutions-IAM5[Resource::<{_logical_id(self.log_group)}.Arn>:*]",
            "Lambda names a log stream per execution environment at run time; the wildcard "
            "stays inside the function's one log group.",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments and PutTelemetryRecords take no resource ARNs.",
        )
        for check, reason in {
            "CKV_AWS_116": (
                "Step Functions invokes the function synchronously (RequestResponse); a "
                "dead-letter queue only receives failed asynchronous events. A failed run "
                "fails the execution, which the failure topic hears about."
            ),
            "CKV_AWS_117": (
                "Outside a VPC on purpose: the job only calls AWS APIs, and a VPC without a "
                "NAT gateway or interface endpoints could not reach SSM (see function.py)."
            ),
            "CKV_AWS_173": (
                "The only variable is the SSM parameter prefix, which is not a secret; Lambda "
                "encrypts environment variables at rest with an AWS-managed key."
            ),
            "CKV_AWS_272": (
                "Code signing applies to .zip functions only; a container image function is "
                "pinned by its ECR digest instead."
            ),
        }.items():
            skip_checkov(self.function, check, reason)
        if reserved is None:
            skip_checkov(
                self.function,
                "CKV_AWS_115",
                "Reserved concurrency is optional (-c lambdaReservedConcurrency=N): reserving "
                "takes from the account's pool, which new accounts keep at its minimum.",
            )


def _logical_id(construct: Construct) -> str:
    return Stack.of(construct).get_logical_id(construct.node.default_child)  # type: ignore[arg-type]
