"""The image repository, in a stack of its own: it must exist (and hold the image) first.

Deploy order (docs/deploy.md): the repository stack, `make ml-push`, then the pipeline
stack, whose task pins the pushed image by digest. A repository inside the pipeline
stack could not hold an image before the stack that needs the image is deployed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_cdk import ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam

from dsjob_infra.function import function_name
from dsjob_infra.nag import skip_checkov

if TYPE_CHECKING:
    from constructs import Construct

    from dsjob_infra.settings import PipelineSettings

UNTAGGED_DAYS = 7


class RepositoryStack(Stack):
    """ECR: scan on push, immutable tags; lifecycle removes untagged and superseded images."""

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
        Tags.of(self).add("project", "dsjob")
        Tags.of(self).add("environment", settings.environment)
        # ECR User Guide, "Lifecycle policy rules": a rule selects untagged or tagged images
        # (tagged needs a pattern); the lowest priority number is evaluated first.
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=settings.repository_name,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    rule_priority=1,
                    description=f"expire untagged images after {UNTAGGED_DAYS} days",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(UNTAGGED_DAYS),
                ),
                ecr.LifecycleRule(
                    rule_priority=2,
                    description=(
                        f"keep the newest {settings.keep_images} tagged images; older ones "
                        "are superseded (the task pins its image by digest)"
                    ),
                    tag_status=ecr.TagStatus.TAGGED,
                    tag_pattern_list=["*"],
                    max_image_count=settings.keep_images,
                ),
            ],
            # A fixed name that outlives the stack: see docs/deploy.md "Re-deploying".
            removal_policy=RemovalPolicy.RETAIN,
        )
        skip_checkov(
            self.repository,
            "CKV_AWS_136",
            "ECR encrypts every image at rest (AES-256) by default; the image holds code, "
            "no data or secrets, and a KMS key would add a key policy for each puller.",
        )
        if settings.compute == "lambda":
            self._let_lambda_pull(settings.environment)
        for output_id, value in {
            "RepositoryName": self.repository.repository_name,
            "RepositoryUri": self.repository.repository_uri,
            # What `make ml-push` must build for: the task's CpuArchitecture.
            "ImagePlatform": settings.image_platform,
        }.items():
            CfnOutput(self, output_id, value=value)

    def _let_lambda_pull(self, environment: str) -> None:
        """Lambda pulls the function's image itself, with the repository policy's leave.

        Lambda Developer Guide, "Create a Lambda function using a container image",
        "Amazon ECR permissions": the repository policy lets lambda.amazonaws.com call
        BatchGetImage and GetDownloadUrlForLayer; aws:sourceArn limits it to this function
        (and its versions).
        """
        function_arn = self.format_arn(
            service="lambda",
            resource="function",
            resource_name=function_name(environment),
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.repository.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LambdaPullsTheJobImage",
                principals=[iam.ServicePrincipal("lambda.amazonaws.com")],
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                conditions={"ArnLike": {"aws:sourceArn": [function_arn, f"{function_arn}:*"]}},
            )
        )
