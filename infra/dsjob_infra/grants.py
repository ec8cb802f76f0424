"""What the job itself may do, granted alike to the Fargate task role and the Lambda role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Stack
from aws_cdk import aws_iam as iam

from dsjob_infra.nag import acknowledge

if TYPE_CHECKING:
    from aws_cdk import aws_s3 as s3

    from dsjob_infra.settings import PipelineSettings


def grant_job(
    role: iam.IRole,
    settings: PipelineSettings,
    input_bucket: s3.IBucket,
    output_bucket: s3.IBucket,
    artifact_bucket: s3.IBucket,
) -> None:
    """The job's own permissions: its SSM prefix, read input and artifacts, write outputs.

    The Fargate task role and the Lambda function role get exactly these statements.
    """
    stack = Stack.of(role)
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ReadJobParameters",
            actions=["ssm:GetParametersByPath"],
            resources=[
                stack.format_arn(
                    service="ssm",
                    resource="parameter",
                    resource_name=settings.param_prefix.lstrip("/"),
                )
            ],
        )
    )
    read_buckets = [input_bucket, artifact_bucket]
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ListInputArtifactsOutput",
            # ListBucket turns a missing key into a 404 (named in the error), not a 403.
            actions=["s3:ListBucket"],
            resources=[b.bucket_arn for b in [*read_buckets, output_bucket]],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ReadInputAndArtifacts",
            actions=["s3:GetObject"],
            resources=[b.arn_for_objects("*") for b in read_buckets],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="PublishAndPruneOutputs",
            # GetObject verifies what was published before old outputs are deleted;
            # AbortMultipartUpload lets a failed large upload clean up after itself.
            actions=[
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:DeleteObject",
            ],
            resources=[output_bucket.arn_for_objects("*")],
        )
    )
    for bucket in (*read_buckets, output_bucket):
        acknowledge(
            role,
            f"AwsSolutions-IAM5[Resource::<{_logical_ref(bucket)}.Arn>/*]",
            "Object keys are chosen per run (dated outputs, per-run inputs); "
            "the wildcard is limited to one bucket of this stack.",
        )


def _logical_ref(bucket: s3.IBucket) -> str:
    return Stack.of(bucket).get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
