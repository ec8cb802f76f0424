"""Where the job runs: the image repository, a small VPC, the ECS cluster and the Fargate task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from dsjob_infra.nag import acknowledge

if TYPE_CHECKING:
    from dsjob_infra.settings import PipelineSettings

CONTAINER_NAME = "job"
LOG_STREAM_PREFIX = "job"
# Fargate's ceiling; the job needs it to finish publishing or abort cleanly after SIGTERM.
STOP_TIMEOUT_SECONDS = 120


class JobCompute(Construct):
    """ECR repository, network, cluster, task definition and the two task roles."""

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
        """Args: the three buckets the task role is scoped to."""
        super().__init__(scope, construct_id)
        env = settings.environment
        self.repository = ecr.Repository(
            self,
            "Repository",
            repository_name=settings.repository_name,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description=f"keep the last {settings.keep_images} images",
                    max_image_count=settings.keep_images,
                    tag_status=ecr.TagStatus.ANY,
                )
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.vpc = self._network(settings)
        self.security_group = ec2.SecurityGroup(
            self,
            "TaskSecurityGroup",
            vpc=self.vpc,
            description=f"ds-preprocessing-{env} task: no inbound, outbound to AWS APIs",
            allow_all_outbound=True,
        )
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            cluster_name=f"ds-preprocessing-{env}",
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.log_group = logs.LogGroup(
            self,
            "JobLogs",
            log_group_name=f"/ecs/ds-preprocessing-{env}",
            retention=retention(settings.log_retention_days),
            removal_policy=RemovalPolicy.RETAIN if env == "prod" else RemovalPolicy.DESTROY,
        )
        self.execution_role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="Pulls the ds-preprocessing image and writes its logs",
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="The job: reads its parameters, input and artifacts; writes outputs",
        )
        self._grant_job(settings, input_bucket, output_bucket, artifact_bucket)
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            family=f"ds-preprocessing-{env}",
            cpu=settings.cpu,
            memory_limit_mib=settings.memory_mib,
            ephemeral_storage_gib=settings.ephemeral_storage_gib,
            execution_role=self.execution_role,
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
                cpu_architecture=ecs.CpuArchitecture.X86_64,
            ),
        )
        self.container = self.task_definition.add_container(
            "Job",
            container_name=CONTAINER_NAME,
            image=ecs.ContainerImage.from_ecr_repository(self.repository, settings.image_tag),
            essential=True,
            stop_timeout=Duration.seconds(STOP_TIMEOUT_SECONDS),
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix=LOG_STREAM_PREFIX, log_group=self.log_group
            ),
            environment={"DSJOB_PARAM_PREFIX": settings.param_prefix},
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The only variable is the SSM parameter prefix, which is not a secret.",
        )

    def _network(self, settings: PipelineSettings) -> ec2.Vpc:
        # Public subnets and no NAT gateway: the task only talks to AWS APIs, a NAT
        # would cost more per month than the monthly job; no inbound rule exists.
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
            restrict_default_security_group=False,
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(settings.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        return vpc

    def _grant_job(
        self,
        settings: PipelineSettings,
        input_bucket: s3.IBucket,
        output_bucket: s3.IBucket,
        artifact_bucket: s3.IBucket,
    ) -> None:
        stack = Stack.of(self)
        self.task_role.add_to_policy(
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
        self.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="ListInputArtifactsOutput",
                # ListBucket turns a missing key into a 404 (named in the error), not a 403.
                actions=["s3:ListBucket"],
                resources=[b.bucket_arn for b in [*read_buckets, output_bucket]],
            )
        )
        self.task_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadInputAndArtifacts",
                actions=["s3:GetObject"],
                resources=[b.arn_for_objects("*") for b in read_buckets],
            )
        )
        self.task_role.add_to_policy(
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
                self.task_role,
                f"AwsSolutions-IAM5[Resource::<{_logical_ref(bucket)}.Arn>/*]",
                "Object keys are chosen per run (dated outputs, per-run inputs); "
                "the wildcard is limited to one bucket of this stack.",
            )


def _logical_ref(bucket: s3.IBucket) -> str:
    return Stack.of(bucket).get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]


def retention(days: int) -> logs.RetentionDays:
    """The RetentionDays member for a number of days (jsii enums carry names, not numbers)."""
    if days not in RETENTION:
        raise ValueError(f"logRetentionDays must be one of {sorted(RETENTION)}, got {days}")
    return RETENTION[days]


RETENTION = {
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}
